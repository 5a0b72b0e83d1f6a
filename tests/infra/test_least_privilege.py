"""The account's infrastructure: valid CloudFormation, and nothing granted broadly or publicly."""

from __future__ import annotations

import copy
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
    from fruits.config import load_settings
    from fruits.emr import job_flow

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

    from fruits.config import batch_marker_key, staging_prefix

    st = statement(template, "AirflowPolicy", "PublishAndReadRuns")
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= set(st["Action"])
    for key in (batch_marker_key("2026-11-24"), staging_prefix("2026-11-24", "k") + "pca/x"):
        assert fnmatch("${DataBucket.Arn}/" + key, st["Resource"]["Fn::Sub"])


def test_emr_nodes_may_write_the_staging_prefix(template):
    """The steps write runs/_staging/...: the nodes' existing runs/ grants cover it."""
    from fnmatch import fnmatch

    from fruits.config import staging_prefix

    key = staging_prefix("2026-11-24", "manual__x-0a1b2c3d") + "features/part-0.parquet"
    write = statement(template, "EmrInstanceRole", "WriteRuns")
    assert fnmatch("${DataBucket.Arn}/" + key, write["Resource"]["Fn::Sub"])
    listing = statement(template, "EmrInstanceRole", "ListOwnPrefixes")
    assert any(fnmatch(key, p) for p in listing["Condition"]["StringLike"]["s3:prefix"])


def test_abandoned_staging_expires(template):
    from fruits.config import STAGING_ROOT

    rules = template["Resources"]["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (rule,) = [r for r in rules if r.get("Prefix") == STAGING_ROOT]
    assert rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == {"Ref": "StagingRetentionDays"}
    assert template["Parameters"]["StagingRetentionDays"]["Default"] <= 7
