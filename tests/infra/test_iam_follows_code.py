"""Every AWS action and S3 prefix the code uses is granted to the role that runs it.

moto enforces no IAM: without this, a missing grant shows only on a real account. The
collectors (infra/code_grants.py, infra/shell_grants.py) read the source; the tables they
map calls and prefixes with (infra/aws_actions.py) are reviewed by hand;
infra/stack_grants.py reads the stack and checks.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from stack_support import without

from infra import aws_actions
from infra.check_policies import load
from infra.code_grants import ROLES, collect, scan_python
from infra.shell_grants import SHELL_URIS, scan_shell
from infra.stack_grants import check

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "fruits-pipeline.yaml"


@pytest.fixture(scope="module")
def template() -> dict:
    return load(TEMPLATE)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


# -- the repository ------------------------------------------------------------------------


def test_the_stack_grants_everything_the_code_uses(template):
    assert check(template) == []


def test_the_collector_sees_each_role_s_calls_and_prefixes():
    airflow, emr, ec2 = collect("airflow"), collect("emr-node"), collect("ec2-node")
    assert {
        "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket",
        "s3:ListBucket@bucket", "elasticmapreduce:RunJobFlow",
        "elasticmapreduce:DescribeCluster", "elasticmapreduce:ListSteps",
        "iam:PassRole@EmrServiceRole", "iam:PassRole@EmrInstanceRole",
        "iam:PassRole@Ec2NodeRole", "ec2:RunInstances", "ec2:DescribeInstances",
        "ssm:SendCommand",
    } <= set(airflow.actions)  # fmt: skip
    assert {"raw/", "code/", "runs/", "runs/_staging/", "logs/emr/", "logs/ec2/", "models/"} <= set(
        airflow.prefixes
    )
    # the node code is the node roles', not Airflow's
    assert not any("ec2/node/" in where for where in airflow.actions.values())
    assert set(emr.actions) & set(ec2.actions) >= {
        "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"
    }  # fmt: skip
    assert "plugins/fruits/clusters/emr/bootstrap.sh" in emr.prefixes["code/"]
    assert "user_data.sh" in ec2.prefixes["logs/ec2/"]
    assert "node_report.py" in ec2.actions["s3:PutObject"]
    for found in (airflow, emr, ec2):
        assert found.unmapped == []


def test_the_serverless_jobs_run_as_the_stack_s_job_role():
    """clusters/serverless/ is Airflow's code; the jobs alone run as the job role."""
    assert ROLES["serverless-job"].stack == "ServerlessJobRole"
    assert ROLES["serverless-job"].include == ("spark_jobs/**/*.py",)
    assert (ROOT / "plugins" / "fruits" / "clusters" / "serverless" / "__init__.py").exists()


def test_the_source_grants_exist_only_with_a_source_bucket(template):
    params = template["Parameters"]
    assert params["SourceBucket"]["Default"] == "" and params["SourcePrefix"]["Default"] == ""
    assert template["Conditions"]["HasSourceBucket"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "SourceBucket"}, ""]}]
    }
    source = template["Resources"]["AirflowSourcePolicy"]
    assert source["Condition"] == "HasSourceBucket"
    assert source["Properties"]["Roles"] == [{"Ref": "AirflowRoleName"}]
    statements = source["Properties"]["PolicyDocument"]["Statement"]
    assert {st["Sid"]: st["Action"] for st in statements} == {
        "ListSourcePrefix": "s3:ListBucket", "ReadSourceObjects": "s3:GetObject"
    }  # fmt: skip
    assert template["Outputs"]["Incoming"]["Condition"] == "HasSourceBucket"


def test_the_tables_name_real_hook_and_client_methods():
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    s3_ops = {name for name, ops in aws_actions._operations().items() if "s3:" in ops[0]}
    boto3_extras = {"get", "copy", "upload_file", "download_file"}  # managed transfers, Object
    for name in aws_actions.S3_CALLS:
        assert hasattr(S3Hook, name) or name in s3_ops or name in boto3_extras, name
    assert aws_actions.client_call("describe_subnets") == ("ec2:DescribeSubnets",)
    assert aws_actions.client_call("list_steps") == ("elasticmapreduce:ListSteps",)
    assert aws_actions.client_call("head_bucket") is None  # S3: only through S3_CALLS
    assert set(SHELL_URIS.values()) <= set(aws_actions.PREFIXES)


# -- the check can fail --------------------------------------------------------------------

AIRFLOW = "plugins/fruits/x.py"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("def f(hook):\n    hook.select_key('k', bucket_name='b')\n",
         "unmapped call: plugins/fruits/x.py:2 hook.select_key"),
        ("from airflow.providers.amazon.aws.operators.athena import AthenaOperator\n",
         "unmapped call: plugins/fruits/x.py:1: AthenaOperator"),
        ("def f(hook):\n    hook.conn.describe_key_pairs()\n",
         "ec2:DescribeKeyPairs on * not granted"),
        ("def f(client):\n    probe = client.describe_vpcs\n    return probe()\n",
         "airflow (AirflowRoleName): ec2:DescribeVpcs on * not granted"),
        ("def f(s3):\n    s3.conn.list_tags_for_resource()\n",  # in several services
         "unmapped call: plugins/fruits/x.py:2 s3.conn.list_tags_for_resource"),
        ("PREFIX = 'archive/'\n", "unmapped prefix: archive/"),
        ("def f(b):\n    return f's3://{b}/exports/x'\n", "unmapped prefix: exports/"),
    ],
)  # fmt: skip
def test_an_unmapped_or_ungranted_call_in_airflow_code_fails(template, tmp_path, source, expected):
    problems = check(template, write(tmp_path, {AIRFLOW: source}))
    assert any(expected in p for p in problems), problems


def test_a_new_prefix_row_still_needs_its_grant(template, tmp_path, monkeypatch):
    monkeypatch.setitem(aws_actions.PREFIXES, "archive/", {"airflow": "", "ec2-node": "rl"})
    problems = check(template, write(tmp_path, {AIRFLOW: "ARCHIVE_ROOT = 'archive/'\n"}))
    assert problems == [
        "ec2-node (Ec2NodeRole): s3:GetObject on object:archive/any not granted: archive/ 'r' "
        "(plugins/fruits/x.py:1)",
        "ec2-node (Ec2NodeRole): s3:ListBucket on list:archive/any/ not granted: archive/ 'l' "
        "(plugins/fruits/x.py:1)",
    ]


@pytest.mark.parametrize(
    "resource, sid, expected",
    [
        ("AirflowPolicy", "ReadStagedWeights", "airflow (AirflowRoleName): s3:GetObject on "
         "object:models/any"),
        ("EmrInstanceRole", "ReadInputsAndCode", "emr-node (EmrInstanceRole): s3:GetObject on "
         "object:models/any"),
        ("Ec2NodeRole", "ListOwnPrefixes", "ec2-node (Ec2NodeRole): s3:ListBucket on "
         "list:models/any/"),
        ("AirflowPolicy", "DescribeClusterNetwork", "ec2:DescribeSubnets on * not granted"),
        ("AirflowPolicy", "PassOnlyTheEc2NodeRole", "iam:PassRole on role:Ec2NodeRole"),
        ("AirflowSourcePolicy", None, "s3:ListBucket on arn:${AWS::Partition}:s3:::"
         "${SourceBucket} list:${SourcePrefix}any/"),
    ],
)  # fmt: skip
def test_a_grant_taken_away_is_missed(template, tmp_path, resource, sid, expected):
    code = {
        AIRFLOW: (
            "from airflow.providers.amazon.aws.operators.ec2 import EC2CreateInstanceOperator\n"
            "MODELS_PREFIX = 'models/'\n"
            "def f(client, source_hook, p):\n"
            "    client.describe_subnets()\n"
            "    source_hook.list_prefixes(bucket_name='b', prefix=p)\n"
        )
    }
    root = write(tmp_path, code)
    assert check(template, root) == []
    problems = check(without(template, resource, sid), root)
    assert any(expected in p for p in problems), problems


def test_unscoped_actions_need_an_allow_on_any_resource(template, tmp_path):
    t = copy.deepcopy(template)
    for st in t["Resources"]["AirflowPolicy"]["Properties"]["PolicyDocument"]["Statement"]:
        if st.get("Sid") == "DescribeClusterNetwork":
            st["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:ec2:*:*:subnet/*"}
    root = write(tmp_path, {AIRFLOW: "def f(client):\n    client.describe_subnets()\n"})
    assert any("ec2:DescribeSubnets on * not granted" in p for p in check(t, root))


def test_node_code_is_checked_against_the_node_roles(template, tmp_path):
    root = write(
        tmp_path,
        {
            "spark_jobs/job.py": "def f(fs, p):\n    fs.setPermission(p)\n",
            "plugins/fruits/clusters/ec2/node/user_data.sh": (
                'aws s3 rm --recursive "$CODE_PREFIX"\naws s3 cp "$ARCHIVE_URI" /tmp/w\n'
            ),
            "plugins/fruits/clusters/ec2/node/node.py": (
                "def f(s3):\n    s3.delete_bucket(Bucket='b')\n"
            ),
        },
    )
    problems = check(template, root)
    for expected in (
        "unmapped call: spark_jobs/job.py:2 fs.setPermission",
        "ec2-node: s3:DeleteObject under code/ (plugins/fruits/clusters/ec2/node/user_data.sh:1",
        "$ARCHIVE_URI (a variable not in SHELL_URIS)",
        "unmapped call: plugins/fruits/clusters/ec2/node/node.py:2 s3.delete_bucket",
    ):
        assert any(expected in p for p in problems), (expected, problems)
    # node code is not Airflow's: the Airflow role's check does not see it
    assert not any(p.startswith("airflow") for p in problems), problems


def test_a_serverless_job_role_without_its_grants_is_reported(template):
    broken = copy.deepcopy(template)
    del broken["Resources"]["ServerlessJobRole"]["Properties"]["Policies"]
    problems = check(broken)
    assert "serverless-job (ServerlessJobRole): s3:GetObject on object:raw/any not granted" in (
        " ".join(problems)
    )
    assert not any(p.startswith("airflow") for p in problems), problems


def test_the_scanners_read_literals_keys_and_shell_continuations():
    found = scan_python(
        "STAGING_ROOT = 'runs/_staging/'\n"
        "def raw_prefix(b):\n    return f'raw/batch={b}/'\n"
        "def uri(bucket):\n    return f's3://{bucket}/logs/emr/'\n"
        "def g(hook, k):\n    hook.load_string('x', key=f'{k}/a')\n",
        "plugins/fruits/y.py",
    )
    assert set(found.prefixes) == {"runs/_staging/", "raw/", "logs/emr/"}
    assert found.actions == {"s3:PutObject": "plugins/fruits/y.py:7 hook.load_string"}
    shell = scan_shell(
        'aws s3 cp - "${LOG_PREFIX}failed/x.json" \\\n    --region "$REGION" --only-show-errors\n',
        "node/user_data.sh",
    )
    assert shell.linked == {("logs/ec2/", "s3:PutObject"): "node/user_data.sh:1 aws s3 cp"}


def test_a_key_built_elsewhere_is_tied_to_its_prefix_and_action(template, tmp_path):
    """A delete under models/ (which Airflow only reads) is caught through the layout
    function that builds the key, in another module."""
    root = write(
        tmp_path,
        {
            "plugins/fruits/storage/keys.py": (
                "MODELS_ROOT = 'models/'\n"
                "def model_key(name):\n    return f'{MODELS_ROOT}{name}/w.h5'\n"
            ),
            AIRFLOW: (
                "from fruits.storage.keys import model_key\n"
                "def f(hook, bucket):\n"
                "    key = model_key('m')\n"
                "    hook.check_for_key(key, bucket_name=bucket)\n"
                "    hook.delete_objects(bucket=bucket, keys=[key])\n"
            ),
        },
    )
    assert check(template, root) == [
        "airflow: s3:DeleteObject under models/ (plugins/fruits/x.py:5 hook.delete_objects), "
        "not in PREFIXES"
    ]


def test_what_runs_as_the_operator_stays_out_of_airflow_s_code(template, tmp_path):
    weights = (
        "PREFIX = 'models/'\n"
        "def stage(client, bucket):\n    client.upload_file('f', bucket, PREFIX + 'm/w.h5')\n"
    )
    root = write(
        tmp_path,
        {
            "plugins/fruits/storage/weights.py": weights,
            "plugins/fruits/dev/stage_weights.py": "from fruits.storage.weights import stage\n",
        },
    )
    assert check(template, root) == []  # the operator's upload is not Airflow's
    write(root, {AIRFLOW: "from fruits.storage.weights import stage\n"})
    assert check(template, root) == ["plugins/fruits/x.py:1: stage runs as the operator"]
