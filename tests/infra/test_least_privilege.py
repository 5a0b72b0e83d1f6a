"""The account's infrastructure: valid CloudFormation, and nothing granted broadly or publicly."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.check_policies import findings, load

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "fruits-pipeline.yaml"


@pytest.fixture(scope="module")
def template() -> dict:
    return load(TEMPLATE)


def statement(template: dict, resource: str, sid: str) -> dict:
    props = template["Resources"][resource]["Properties"]
    docs = [props["PolicyDocument"]] if "PolicyDocument" in props else [
        p["PolicyDocument"] for p in props["Policies"]
    ]  # fmt: skip
    return next(st for d in docs for st in d["Statement"] if st.get("Sid") == sid)


def test_cfn_lint_accepts_the_template():
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_our_template_has_no_findings(template):
    assert findings(template) == []


def test_bucket_is_private_versioned_encrypted_with_lifecycle(template):
    props = template["Resources"]["DataBucket"]["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-old-runs"]["Prefix"] == "runs/"
    assert rules["expire-old-runs"]["ExpirationInDays"] == {"Ref": "RunsRetentionDays"}
    assert "raw/" not in {r.get("Prefix") for r in rules.values()}  # inputs never expire


def test_pass_role_is_limited_to_the_two_emr_roles(template):
    st = statement(template, "AirflowPolicy", "PassOnlyTheTwoEmrRoles")
    assert st["Resource"] == [
        {"Fn::GetAtt": ["EmrServiceRole", "Arn"]},
        {"Fn::GetAtt": ["EmrInstanceRole", "Arn"]},
    ]


def test_emr_nodes_read_raw_and_code_and_write_only_runs_and_logs(template):
    role = "EmrInstanceRole"
    read = statement(template, role, "ReadInputsAndCode")
    assert read["Action"] == "s3:GetObject"
    writes = [statement(template, role, sid) for sid in ("WriteRuns", "WriteLogs")]
    written = [r["Fn::Sub"] for st in writes for r in [st["Resource"]]]
    assert written == ["${DataBucket.Arn}/runs/*", "${DataBucket.Arn}/logs/*"]


def mutate(template: dict, resource: str, sid: str, **changes) -> dict:
    t = copy.deepcopy(template)
    statement(t, resource, sid).update(changes)
    return t


@pytest.mark.parametrize(
    "resource, sid, changes, expected",
    [
        ("AirflowPolicy", "UploadCode", {"Resource": "*"}, "Resource '*'"),
        ("AirflowPolicy", "UploadCode", {"Action": "s3:*"}, "wildcard action"),
        ("AirflowPolicy", "PassOnlyTheTwoEmrRoles", {"Resource": "arn:aws:iam::1:role/*"},
         "PassRole on a wildcard"),
        ("AirflowPolicy", "CreateTaggedClusters", {"Condition": {}}, "without a Condition"),
        ("DataBucketPolicy", "DenyInsecureTransport", {"Effect": "Allow"}, "public principal"),
        ("EmrInstanceRole", "WriteRuns", {"Action": "*"}, "wildcard action"),
    ],
)  # fmt: skip
def test_the_check_catches_broad_grants(template, resource, sid, changes, expected):
    found = findings(mutate(template, resource, sid, **changes))
    assert any(expected in f for f in found), found


def test_the_check_catches_a_public_or_unprotected_bucket(template):
    t = copy.deepcopy(template)
    props = t["Resources"]["DataBucket"]["Properties"]
    props["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] = False
    props["AccessControl"] = "PublicRead"
    del props["BucketEncryption"]
    t["Resources"]["DataBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"] = []
    found = "\n".join(findings(t))
    for expected in ("BlockPublicPolicy", "PublicRead", "no default encryption", "TLS"):
        assert expected in found


def test_nothing_in_the_repository_grants_public_read():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    needles = ("public-read", "PublicRead", "AllUsers")
    offenders = [
        f for f in tracked
        if f.endswith((".json", ".yaml", ".yml", ".py", ".sh", ".tf"))
        and not f.startswith(("tests/infra/", "infra/check_policies.py"))
        and any(n in (ROOT / f).read_text(errors="ignore") for n in needles)
    ]  # fmt: skip
    assert offenders == []


def test_the_dag_asks_for_what_the_policy_allows(template):
    """The cluster request carries the tag the Airflow policy requires, and names the two
    roles the template creates; otherwise the first real run would be denied."""
    from fruits.clusters.emr.job_flow import job_flow
    from fruits.settings import load_settings

    settings = load_settings({"FRUITS_COMPUTE": "emr", "FRUITS_BUCKET": "my-fruits"})
    code = {k: f"s3://my-fruits/code/v/{k}" for k in ("bootstrap", "requirements")}
    request = job_flow(settings, name="fruits_pipeline test", code=code)
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    required = statement(template, "AirflowPolicy", "CreateTaggedClusters")["Condition"]
    for key, value in required["StringEquals"].items():
        assert tags[key.removeprefix("aws:RequestTag/")] == value
    assert tags["for-use-with-amazon-emr-managed-policies"] == "true"
    params = template["Parameters"]
    assert request["ServiceRole"] == params["EmrServiceRoleName"]["Default"]
    assert request["JobFlowRole"] == params["EmrInstanceRoleName"]["Default"]
    assert request["LogUri"].startswith("s3://my-fruits/logs/")  # where the nodes may write


def test_airflow_may_take_down_and_write_the_batch_marker(template):
    """publish_batch deletes runs/batch=<date>/_SUCCESS, copies the staged outputs over
    the published ones and writes the marker: all within what the Airflow role may do
    under runs/, and nothing broader is needed."""
    from fnmatch import fnmatch

    from fruits.storage.layout import batch_marker_key, staging_prefix

    st = statement(template, "AirflowPolicy", "PublishAndReadRuns")
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= set(st["Action"])
    for key in (batch_marker_key("2026-11-24"), staging_prefix("2026-11-24", "k") + "pca/x"):
        assert fnmatch("${DataBucket.Arn}/" + key, st["Resource"]["Fn::Sub"])


def test_emr_nodes_may_write_the_staging_prefix(template):
    """The steps write runs/_staging/...: the nodes' existing runs/ grants cover it."""
    from fnmatch import fnmatch

    from fruits.storage.layout import staging_prefix

    key = staging_prefix("2026-11-24", "manual__x-0a1b2c3d") + "features/part-0.parquet"
    write = statement(template, "EmrInstanceRole", "WriteRuns")
    assert fnmatch("${DataBucket.Arn}/" + key, write["Resource"]["Fn::Sub"])
    listing = statement(template, "EmrInstanceRole", "ListOwnPrefixes")
    assert any(fnmatch(key, p) for p in listing["Condition"]["StringLike"]["s3:prefix"])


def test_abandoned_staging_expires(template):
    from fruits.storage.layout import STAGING_ROOT

    rules = template["Resources"]["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (rule,) = [r for r in rules if r.get("Prefix") == STAGING_ROOT]
    assert rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == {"Ref": "StagingRetentionDays"}
    assert template["Parameters"]["StagingRetentionDays"]["Default"] <= 7


# -- ec2 backend: node role, security group, Airflow's EC2 and SSM grants --------------------


def statements(template: dict, resource: str) -> list[dict]:
    props = template["Resources"][resource]["Properties"]
    docs = [props["PolicyDocument"]] if "PolicyDocument" in props else [
        p["PolicyDocument"] for p in props["Policies"]
    ]  # fmt: skip
    return [st for d in docs for st in d["Statement"]]


def sub(resource) -> str:
    return resource["Fn::Sub"]


def s3_grants(template: dict, role: str) -> dict[str, set[str]]:
    """action -> the resources (as written) a role's S3 statements grant it on."""
    grants: dict[str, set[str]] = {}
    for st in statements(template, role):
        for action in [st["Action"]] if isinstance(st["Action"], str) else st["Action"]:
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            grants.setdefault(action, set()).update(
                sub(r) if "Fn::Sub" in r else r["Fn::GetAtt"][0] for r in resources
            )
    return grants


def test_ec2_nodes_read_code_and_raw_and_write_only_runs_and_their_state(template):
    grants = s3_grants(template, "Ec2NodeRole")
    bucket = "${DataBucket.Arn}"
    assert grants.pop("s3:GetObject") == {
        f"{bucket}/code/*", f"{bucket}/raw/*", f"{bucket}/models/*", f"{bucket}/runs/*",
        f"{bucket}/logs/ec2/*", f"{bucket}/wheels/*", f"{bucket}/jars/*",
    }  # fmt: skip
    assert grants.pop("s3:PutObject") == {f"{bucket}/runs/*", f"{bucket}/logs/ec2/*"}
    assert grants.pop("s3:DeleteObject") == {f"{bucket}/runs/*", f"{bucket}/logs/ec2/*"}
    assert grants.pop("s3:ListBucket") == {"DataBucket"}  # the bucket, only under prefixes:
    assert grants == {}
    listing = statement(template, "Ec2NodeRole", "ListOwnPrefixes")["Condition"]
    assert set(listing["StringLike"]["s3:prefix"]) == {
        "code/*", "raw/*", "models/*", "runs/*", "logs/ec2/*", "wheels/*", "jars/*"
    }  # fmt: skip
    role = template["Resources"]["Ec2NodeRole"]["Properties"]
    assert [sub(a) for a in role["ManagedPolicyArns"]] == [
        "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
    ]


def test_ec2_nodes_may_write_the_staging_prefix_and_their_state_files(template):
    from fnmatch import fnmatch

    from fruits.storage.layout import staging_prefix

    key = staging_prefix("2026-11-24", "manual__x-0a1b2c3d") + "features/part-0.parquet"
    assert fnmatch(
        "${DataBucket.Arn}/" + key, sub(statement(template, "Ec2NodeRole", "WriteRuns")["Resource"])
    )
    state = sub(statement(template, "Ec2NodeRole", "WriteClusterState")["Resource"])
    for name in (
        "ready.json",
        "failed/i-0abc",
        "steps.json",
        "steps/s-1/state.json",
        "steps/s-1/stderr",
    ):
        assert fnmatch(f"${{DataBucket.Arn}}/logs/ec2/j-run-1/{name}", state)
    assert not fnmatch("${DataBucket.Arn}/logs/emr/j-1/stderr", state)  # not EMR's logs


def test_the_node_instance_profile_is_named_as_the_setting_expects(template):
    params, res = template["Parameters"], template["Resources"]
    assert params["Ec2NodeRoleName"]["Default"] == "fruits-ec2-node-role"
    profile = res["Ec2NodeInstanceProfile"]["Properties"]
    assert profile["InstanceProfileName"] == {"Ref": "Ec2NodeRoleName"}
    assert profile["Roles"] == [{"Ref": "Ec2NodeRole"}]
    assert res["Ec2NodeRole"]["Properties"]["RoleName"] == {"Ref": "Ec2NodeRoleName"}
    assert template["Outputs"]["Ec2NodeInstanceProfile"]["Value"] == {
        "Ref": "Ec2NodeInstanceProfile"
    }
    assert template["Outputs"]["ClusterSecurityGroup"]["Value"] == {
        "Fn::GetAtt": ["ClusterSecurityGroup", "GroupId"]
    }


def test_airflow_launches_only_tagged_nodes_with_the_node_profile(template):
    nodes = statement(template, "AirflowPolicy", "LaunchTaggedNodes")
    assert nodes["Action"] == "ec2:RunInstances"
    assert sub(nodes["Resource"]).endswith(":instance/*")
    assert nodes["Condition"]["StringEquals"] == {
        "aws:RequestTag/project": "fruits-pipeline", "ec2:MetadataHttpTokens": "required"
    }  # fmt: skip
    assert nodes["Condition"]["ArnEquals"] == {
        "ec2:InstanceProfile": {"Fn::GetAtt": ["Ec2NodeInstanceProfile", "Arn"]}
    }
    parts = statement(template, "AirflowPolicy", "LaunchTaggedVolumesAndInterfaces")
    assert [sub(r).rsplit(":", 1)[1] for r in parts["Resource"]] == [
        "volume/*", "network-interface/*"
    ]  # fmt: skip
    assert parts["Condition"] == {"StringEquals": {"aws:RequestTag/project": "fruits-pipeline"}}
    network = statement(template, "AirflowPolicy", "LaunchIntoClusterNetwork")
    assert sub(network["Resource"][1]).endswith(":security-group/${ClusterSecurityGroup.GroupId}")
    assert sub(network["Condition"]["ArnEquals"]["ec2:Vpc"]).endswith(":vpc/${VpcId}")
    tags = statement(template, "AirflowPolicy", "TagNodesOnLaunch")
    assert tags["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}


def test_airflow_terminates_and_commands_only_the_projects_instances(template):
    end = statement(template, "AirflowPolicy", "TerminateOwnNodes")
    assert end["Action"] == "ec2:TerminateInstances"
    assert end["Condition"] == {"StringEquals": {"ec2:ResourceTag/project": "fruits-pipeline"}}
    run = statement(template, "AirflowPolicy", "RunCommandsOnOwnNodes")
    assert sub(run["Resource"]).endswith(":instance/*")
    assert run["Condition"] == {"StringEquals": {"ssm:resourceTag/project": "fruits-pipeline"}}
    doc = statement(template, "AirflowPolicy", "RunShellScriptDocument")
    assert sub(doc["Resource"]) == (
        "arn:${AWS::Partition}:ssm:${AWS::Region}::document/AWS-RunShellScript"
    )
    for sid in ("DescribeNodes", "DescribeClusterNetwork", "ReadCommandResults"):
        unscoped = statement(template, "AirflowPolicy", sid)
        assert unscoped["Resource"] == "*"
        assert unscoped["Condition"] == {
            "StringEquals": {"aws:RequestedRegion": {"Ref": "AWS::Region"}}
        }


def test_airflow_may_queue_ec2_steps_but_not_touch_other_logs(template):
    """add_steps writes <log prefix>steps.json and steps/<id>/state.json (PENDING) for the
    primary's step runner: Airflow may put objects under logs/ec2/ only, and delete none."""
    from fnmatch import fnmatch

    st = statement(template, "AirflowPolicy", "WriteEc2StepQueue")
    assert st["Action"] == "s3:PutObject"
    for key in ("steps.json", "steps/s-EC200ABCDEF01/state.json"):
        assert fnmatch(f"${{DataBucket.Arn}}/logs/ec2/ec2-run-1/{key}", sub(st["Resource"]))
    puts = [
        sub(s["Resource"]) for s in statements(template, "AirflowPolicy")
        if "s3:PutObject" in s["Action"] and "/logs/" in sub(s["Resource"])
    ]  # fmt: skip
    assert puts == ["${DataBucket.Arn}/logs/ec2/*"]


def test_airflow_resolves_only_amazon_linux_images_and_spot_s_own_role(template):
    image = statement(template, "AirflowPolicy", "ResolveAmazonLinuxImage")
    assert image["Action"] == "ssm:GetParameters"
    assert sub(image["Resource"]) == (
        "arn:${AWS::Partition}:ssm:${AWS::Region}::parameter/aws/service/ami-amazon-linux-latest/*"
    )
    spot = statement(template, "AirflowPolicy", "CreateSpotServiceLinkedRole")
    assert sub(spot["Resource"]).endswith(
        ":role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"
    )
    assert spot["Condition"] == {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}}


def test_pass_role_to_ec2_names_only_the_node_role(template):
    st = statement(template, "AirflowPolicy", "PassOnlyTheEc2NodeRole")
    assert st["Resource"] == {"Fn::GetAtt": ["Ec2NodeRole", "Arn"]}
    assert st["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


def test_the_cluster_admits_only_its_own_nodes(template):
    res = template["Resources"]
    group = res["ClusterSecurityGroup"]["Properties"]
    assert group["VpcId"] == {"Ref": "VpcId"}
    assert "SecurityGroupIngress" not in group  # ingress only through the rule below
    ingress = [
        p["Properties"] for p in res.values() if p["Type"] == "AWS::EC2::SecurityGroupIngress"
    ]
    itself = {"Fn::GetAtt": ["ClusterSecurityGroup", "GroupId"]}
    assert ingress == [
        {"Description": ingress[0]["Description"], "GroupId": itself,
         "SourceSecurityGroupId": itself, "IpProtocol": "-1"}
    ]  # fmt: skip
    out = group["SecurityGroupEgress"] + [
        p["Properties"] for p in res.values() if p["Type"] == "AWS::EC2::SecurityGroupEgress"
    ]
    assert [(r.get("CidrIp"), r.get("FromPort"), r.get("ToPort")) for r in out] == [
        ("0.0.0.0/0", 443, 443), (None, None, None)
    ]  # fmt: skip
    assert out[1]["DestinationSecurityGroupId"] == itself
    assert all(r["Description"] for r in out)


def test_the_data_bucket_logs_to_the_access_log_bucket(template):
    res = template["Resources"]
    logging = res["DataBucket"]["Properties"]["LoggingConfiguration"]
    assert logging["DestinationBucketName"] == {"Ref": "AccessLogBucket"}
    (grant,) = [
        st for st in statements(template, "AccessLogBucketPolicy") if st["Effect"] == "Allow"
    ]
    assert grant["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert grant["Action"] == "s3:PutObject"
    assert sub(grant["Resource"]) == "${AccessLogBucket.Arn}/" + logging["LogFilePrefix"] + "*"
    assert sub(grant["Condition"]["ArnLike"]["aws:SourceArn"]) == (
        "arn:${AWS::Partition}:s3:::${BucketName}"  # the DataBucket's name
    )
    assert res["DataBucket"]["Properties"]["BucketName"] == {"Ref": "BucketName"}
    assert grant["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    # log delivery writes as the service, with no ACL: the bucket owner owns the logs
    owner = res["AccessLogBucket"]["Properties"]["OwnershipControls"]["Rules"]
    assert owner == [{"ObjectOwnership": "BucketOwnerEnforced"}]


@pytest.mark.parametrize(
    "resource, sid, changes, expected",
    [
        ("AirflowPolicy", "LaunchTaggedNodes", {"Condition": {}},
         "ec2:RunInstances without StringEquals aws:RequestTag/project"),
        ("AirflowPolicy", "LaunchTaggedVolumesAndInterfaces",
         {"Condition": {"StringEquals": {"aws:RequestTag/project": "other"}}},
         "ec2:RunInstances without"),
        ("AirflowPolicy", "LaunchIntoClusterNetwork", {"Resource": "*"}, "Resource '*'"),
        ("AirflowPolicy", "TagNodesOnLaunch", {"Condition": {}}, "ec2:CreateTags without"),
        ("AirflowPolicy", "CreateSpotServiceLinkedRole", {"Condition": {}},
         "iam:CreateServiceLinkedRole without"),
        ("AirflowPolicy", "ResolveAmazonLinuxImage", {"Resource": "*"}, "Resource '*'"),
        ("AirflowPolicy", "TerminateOwnNodes", {"Condition": {}},
         "ec2:TerminateInstances without StringEquals"),
        ("AirflowPolicy", "RunCommandsOnOwnNodes", {"Condition": {}}, "ssm:SendCommand without"),
        ("AirflowPolicy", "DescribeNodes", {"Condition": {}}, "without a Condition"),
        ("AirflowPolicy", "ReadCommandResults", {"Action": "ssm:*"}, "wildcard action"),
        ("AirflowPolicy", "PassOnlyTheEc2NodeRole",
         {"Resource": "arn:aws:iam::1:role/fruits-ec2-node-role"}, "not a role of this template"),
        ("AirflowPolicy", "PassOnlyTheEc2NodeRole",
         {"Resource": {"Fn::GetAtt": ["DataBucket", "Arn"]}}, "not a role of this template"),
        ("AirflowPolicy", "PassOnlyTheEc2NodeRole", {"Condition": {}}, "iam:PassedToService"),
        ("Ec2NodeRole", "ReadInputsAndCode", {"Resource": {"Fn::Sub": "${DataBucket.Arn}/*"}},
         "object access to a whole bucket"),
        ("Ec2NodeRole", "WriteClusterState", {"Resource": "arn:aws:s3:::my-fruits/*"},
         "object access to a whole bucket"),
        ("AccessLogBucketPolicy", "S3ServerAccessLogsFromDataBucket", {"Principal": "*"},
         "public principal"),
    ],
)  # fmt: skip
def test_the_check_catches_broad_ec2_and_ssm_grants(template, resource, sid, changes, expected):
    found = findings(mutate(template, resource, sid, **changes))
    assert any(expected in f for f in found), found


def test_the_check_catches_an_open_or_undescribed_security_group(template):
    t = copy.deepcopy(template)
    group = t["Resources"]["ClusterSecurityGroup"]["Properties"]
    group["SecurityGroupIngress"] = [
        {"Description": "web", "IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
         "CidrIp": "0.0.0.0/0"},
        {"Description": "ssh", "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "CidrIp": "10.0.0.0/8"},
        {"Description": "v6", "IpProtocol": "-1", "CidrIpv6": "::/0"},
    ]  # fmt: skip
    del t["Resources"]["ClusterSelfEgress"]["Properties"]["Description"]
    found = "\n".join(findings(t))
    assert "ClusterSecurityGroup: ingress from the internet (['0.0.0.0/0'])" in found
    assert "ClusterSecurityGroup: SSH (port 22) open to ['10.0.0.0/8']" in found
    assert "ClusterSecurityGroup: ingress from the internet (['::/0'])" in found
    assert "ClusterSelfEgress: security group rule without a Description" in found
    self_rule = t["Resources"]["ClusterSelfIngress"]["Properties"]
    self_rule.pop("SourceSecurityGroupId")
    self_rule["CidrIp"] = "0.0.0.0/0"
    assert "ClusterSelfIngress: ingress from the internet" in "\n".join(findings(t))


def test_the_check_catches_a_bucket_without_access_logs(template):
    t = copy.deepcopy(template)
    del t["Resources"]["DataBucket"]["Properties"]["LoggingConfiguration"]
    found = findings(t)
    assert "DataBucket: no access logging (and not the log bucket of another)" in found
    # the log bucket is exempt only while it is the destination of another bucket
    assert "AccessLogBucket: no access logging (and not the log bucket of another)" in found
    t["Resources"]["DataBucket"]["Properties"]["LoggingConfiguration"] = {
        "DestinationBucketName": {"Ref": "DataBucket"}
    }
    assert "DataBucket: access logs delivered to the bucket itself" in findings(t)


def test_the_check_catches_a_broad_managed_policy(template):
    t = copy.deepcopy(template)
    t["Resources"]["Ec2NodeRole"]["Properties"]["ManagedPolicyArns"].append(
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AdministratorAccess"}
    )
    assert findings(t) == [
        "Ec2NodeRole: managed policy 'arn:${AWS::Partition}:iam::aws:policy/AdministratorAccess'"
        " is not in MANAGED_POLICIES"
    ]


# -- checkov: a second, independent scanner (pinned in infra/tools-requirements.txt) ----------

CHECKOV = ROOT / ".venv-tools" / "bin" / "checkov"


def checkov(path: Path) -> dict:
    assert CHECKOV.exists(), (
        f"{CHECKOV} is missing: run `make tools` (or `make test`, which installs it)"
    )
    done = subprocess.run(
        [str(CHECKOV), "-f", str(path), "--framework", "cloudformation", "-o", "json",
         "--skip-download"],  # no calls to Prisma Cloud: offline, same result
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    (report,) = report if isinstance(report, list) else [report]
    assert report["check_type"] == "cloudformation"
    return report


def test_checkov_finds_nothing(template):
    report = checkov(TEMPLATE)
    summary, results = report["summary"], report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert failed == []
    assert summary["parsing_errors"] == 0
    assert summary["passed"] >= 50, summary
    # the one skip: the access-log bucket does not log itself (see its Metadata)
    skipped = [(c["check_id"], c["resource"]) for c in results["skipped_checks"]]
    assert skipped == [("CKV_AWS_18", "AWS::S3::Bucket.AccessLogBucket")]


def test_checkov_catches_a_broken_template(template, tmp_path):
    t = copy.deepcopy(template)
    t["Resources"]["DataBucket"]["Properties"]["PublicAccessBlockConfiguration"][
        "BlockPublicPolicy"
    ] = False
    del t["Resources"]["DataBucket"]["Properties"]["LoggingConfiguration"]
    t["Resources"]["ClusterSecurityGroup"]["Properties"]["SecurityGroupIngress"] = [
        {"Description": "ssh", "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "CidrIp": "0.0.0.0/0"}
    ]  # fmt: skip
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(t))
    failed = {(c["check_id"], c["resource"]) for c in checkov(broken)["results"]["failed_checks"]}
    assert failed == {
        ("CKV_AWS_54", "AWS::S3::Bucket.DataBucket"),
        ("CKV_AWS_18", "AWS::S3::Bucket.DataBucket"),
        ("CKV_AWS_24", "AWS::EC2::SecurityGroup.ClusterSecurityGroup"),
    }


# -- serverless backend: the job role, Airflow's EMR Serverless grants ----------------------


def test_serverless_jobs_read_inputs_and_the_archive_and_write_only_runs_and_logs(template):
    role = template["Resources"]["ServerlessJobRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "emr-serverless.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    grants = s3_grants(template, "ServerlessJobRole")
    bucket = "${DataBucket.Arn}"
    assert grants.pop("s3:GetObject") == {
        f"{bucket}/raw/*", f"{bucket}/code/*", f"{bucket}/models/*", f"{bucket}/wheels/*",
        f"{bucket}/runs/*",
    }  # fmt: skip
    assert grants.pop("s3:PutObject") == {f"{bucket}/runs/*", f"{bucket}/logs/serverless/*"}
    assert grants.pop("s3:DeleteObject") == {f"{bucket}/runs/*"}
    assert grants.pop("s3:ListBucket") == {"DataBucket"}  # under its prefixes only
    assert grants == {}


def test_airflow_acts_only_on_tagged_serverless_applications(template):
    create = statement(template, "AirflowPolicy", "CreateTaggedServerlessApplications")
    assert create["Condition"] == {"StringEquals": {"aws:RequestTag/project": "fruits-pipeline"}}
    run = statement(template, "AirflowPolicy", "RunJobsOnOwnServerlessApplications")
    assert run["Condition"] == {"StringEquals": {"aws:ResourceTag/project": "fruits-pipeline"}}
    assert not any(a.endswith("*") for a in run["Action"])
    assert sub(run["Resource"]).endswith(":/applications/*")


def test_pass_role_to_emr_serverless_names_only_the_job_role(template):
    st = statement(template, "AirflowPolicy", "PassOnlyTheServerlessJobRole")
    assert st["Resource"] == {"Fn::GetAtt": ["ServerlessJobRole", "Arn"]}
    assert st["Condition"] == {
        "StringEquals": {"iam:PassedToService": "emr-serverless.amazonaws.com"}
    }


def test_airflow_reads_but_never_creates_the_service_linked_role(template):
    st = statement(template, "AirflowPolicy", "ReadServerlessRoles")
    assert st["Action"] == "iam:GetRole"
    assert sub(st["Resource"][1]).endswith(
        "role/aws-service-role/ops.emr-serverless.amazonaws.com/AWSServiceRoleForAmazonEMRServerless"
    )
    created = [
        st for st in statements(template, "AirflowPolicy")
        if "iam:CreateServiceLinkedRole" in str(st["Action"])
    ]  # fmt: skip
    assert all(st["Condition"]["StringEquals"]["iam:AWSServiceName"] == "spot.amazonaws.com"
               for st in created)  # fmt: skip
