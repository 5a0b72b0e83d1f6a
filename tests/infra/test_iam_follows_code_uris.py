"""The S3 URIs the code builds for a cloud run -- the code it uploads, the steps' inputs
and outputs, the EMR job flow's, the ec2 nodes' user data -- are granted to the role that
uses each: the nodes' roles for what they read and write, Airflow's for its uploads.

test_iam_follows_code.py reads the source; this runs the builders themselves (no AWS:
a recording stand-in for S3Hook), so a key built at run time is checked as built.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from s3transfer.manager import TransferConfig
from stack_support import without

from infra.check_policies import load
from infra.code_grants import ROLES
from infra.stack_grants import Need, granted

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "my-fruits"
RUN = {"batch": "2026-11-24", "model": "mobilenetv2", "weights": "imagenet",
       "image_size": 224, "variance": 0.95, "runtime": None}  # fmt: skip
READ = ("s3:GetObject",)
LIST_READ = ("s3:GetObject", "s3:ListBucket")
WRITE = ("s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:ListBucket")


class RecordingS3Hook:
    """What upload_code asks of S3Hook, recorded as (action, uri)."""

    transfer_config = TransferConfig()

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def iter_file_metadata(self, prefix: str, bucket_name: str) -> list:
        self.calls.append(("s3:ListBucket", f"s3://{bucket_name}/{prefix}"))
        return []

    def load_file(self, filename, key: str, bucket_name: str, replace: bool = False) -> None:
        self.calls.append(("s3:PutObject", f"s3://{bucket_name}/{key}"))


@pytest.fixture(scope="module")
def template() -> dict:
    return load(ROOT / "infra" / "fruits-pipeline.yaml")


def uses(compute: str) -> list[tuple[str, str, str]]:
    """(role, action, uri) of one cloud run on ``compute``, from the code's own builders."""
    from fruits.clusters import backend
    from fruits.clusters.common.spark_steps import OUTPUT_FLAGS, build_steps
    from fruits.settings import load_settings
    from fruits.storage.code_bundle import upload_code

    settings = load_settings({"FRUITS_COMPUTE": compute, "FRUITS_BUCKET": BUCKET})
    cluster, hook = backend(compute), RecordingS3Hook()
    code = upload_code(hook, settings, RUN, ship_imagenet=cluster.REMOTE,
                       extra_files=cluster.code_files())  # fmt: skip
    found = [("airflow", action, uri) for action, uri in hook.calls]
    node = f"{compute}-node"
    steps = build_steps(bucket=BUCKET, batch=RUN["batch"], run_key="run-1", code=code, run=RUN)
    for step in steps:
        args = step["HadoopJarStep"]["Args"]
        for i, arg in enumerate(args):
            if arg.startswith("s3://"):
                modes = WRITE if args[i - 1] in OUTPUT_FLAGS else LIST_READ
                found += [(node, action, arg) for action in modes]
    request = cluster.cluster_request(settings, name="n", code=code, run_key="run-1", timeout=60)
    if compute == "emr":
        found.append((node, "s3:PutObject", request["LogUri"]))
        action = request["BootstrapActions"][0]["ScriptBootstrapAction"]
        found += [(node, "s3:GetObject", uri) for uri in [action["Path"], *action["Args"][:1]]]
    else:
        found += [(node, a, request["user_data"]["code_prefix"]) for a in LIST_READ]
        found += [(node, a, request["log_prefix"]) for a in WRITE]
        found += [("airflow", "s3:PutObject", request["log_prefix"] + "steps.json")]
    return found


def need(action: str, uri: str) -> Need:
    key = uri.split("/", 3)[3]
    if action == "s3:ListBucket":
        return Need(action, f"list:{key}")
    return Need(action, f"object:{key}part-0" if key.endswith("/") else f"object:{key}")


@pytest.mark.parametrize("compute", ["emr", "ec2"])
def test_every_uri_a_cloud_run_builds_is_granted(template, compute):
    found = uses(compute)
    assert {uri.split("/")[3] for _, _, uri in found} >= {"code", "raw", "runs", "models", "logs"}
    missing = [
        (role, action, uri) for role, action, uri in found
        if not granted(template, ROLES[role].stack, need(action, uri))
    ]  # fmt: skip
    assert missing == []


def test_a_uri_outside_the_grants_is_caught(template):
    assert not granted(template, "EmrInstanceRole", need("s3:GetObject", "s3://b/archive/x.zip"))
    assert not granted(template, "Ec2NodeRole", need("s3:PutObject", "s3://b/logs/emr/j-1/x"))
    assert not granted(template, "Ec2NodeRole", need("s3:PutObject", "s3://b/models/m/x.h5"))
    assert not granted(template, "EmrInstanceRole", need("s3:ListBucket", "s3://b/logs/emr/"))
    assert granted(template, "EmrInstanceRole", need("s3:ListBucket", "s3://b/models/m/"))


@pytest.mark.parametrize(
    "compute, resource, sid, lost",
    [
        ("emr", "EmrInstanceRole", "ReadInputsAndCode", "s3://my-fruits/models/mobilenetv2/"),
        ("emr", "EmrInstanceRole", "WriteLogs", "s3://my-fruits/logs/emr/"),
        ("ec2", "Ec2NodeRole", "WriteClusterState", "s3://my-fruits/logs/ec2/"),
        ("ec2", "AirflowPolicy", "UploadCode", "s3://my-fruits/code/"),
    ],
)  # fmt: skip
def test_a_grant_taken_away_from_a_built_uri_is_missed(template, compute, resource, sid, lost):
    t = without(template, resource, sid)
    missing = [
        uri for role, action, uri in uses(compute)
        if not granted(t, ROLES[role].stack, need(action, uri))
    ]  # fmt: skip
    assert any(uri.startswith(lost) for uri in missing), missing
