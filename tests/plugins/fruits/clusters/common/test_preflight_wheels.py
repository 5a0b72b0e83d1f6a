"""The pre-flight of the nodes' staged wheels: found for the run's pins and arch, or a
failure naming ``make stage-wheels``; a connection that may not look is not a failure."""

from __future__ import annotations

import io
import json

import pytest
from botocore.exceptions import ClientError
from dag_support import BUCKET, ROOT

from fruits.clusters.common.preflight import PreflightError, staged_wheels
from fruits.settings import load_settings
from fruits.storage.wheels import node_wheels


class Client:
    """boto3's S3 client as far as the check uses it: one object, or an error."""

    def __init__(self, objects: dict[str, bytes] | None = None, error: str | None = None):
        self.objects, self.error, self.asked = objects or {}, error, []

    def get_object(self, Bucket, Key):  # noqa: N803 (boto3's names)
        self.asked.append((Bucket, Key))
        if self.error or Key not in self.objects:
            code = self.error or "NoSuchKey"
            raise ClientError({"Error": {"Code": code, "Message": code}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}


def manifest_of(kind: str, arch: str, lines=None) -> dict[str, bytes]:
    wheels = node_wheels(kind, arch, ROOT / "spark_jobs")
    body = wheels.manifest(["x.whl"]) | ({"requirements": lines} if lines is not None else {})
    return {wheels.prefix + "index.json": json.dumps(body).encode()}


@pytest.mark.parametrize("kind", ["emr", "ec2"])
def test_staged_wheels_of_the_runs_pins_and_arch_pass(kind):
    arch_setting = f"FRUITS_{kind.upper()}_ARCH"
    settings = load_settings({"FRUITS_BUCKET": BUCKET, arch_setting: "arm64"})
    lines = list(node_wheels(kind, "arm64", ROOT / "spark_jobs").lines)
    client = Client(manifest_of(kind, "arm64", lines[::-1]))  # order does not matter
    staged_wheels(settings, kind, client)
    ((bucket, key),) = client.asked
    assert bucket == BUCKET and key.endswith("/arm64/index.json")
    with pytest.raises(PreflightError, match=f"the {kind} nodes' wheels \\(arm64\\)"):
        staged_wheels(settings, kind, Client(manifest_of(kind, "x86_64")))


def test_missing_or_mismatched_wheels_fail_naming_the_command():
    settings = load_settings({"FRUITS_BUCKET": BUCKET})
    wheels = node_wheels("emr", "x86_64", ROOT / "spark_jobs")
    for client in (
        Client(),  # nothing staged
        Client(error="NoSuchBucket"),
        Client(manifest_of("emr", "x86_64", ["numpy==1.0.0"])),  # a manifest of other pins
    ):
        with pytest.raises(PreflightError) as failed:
            staged_wheels(settings, "emr", client)
        assert wheels.uri(BUCKET) in str(failed.value)
        assert f"make stage-wheels FRUITS_BUCKET={BUCKET}" in str(failed.value)


def test_a_connection_that_may_not_look_skips_and_other_errors_raise(capsys):
    settings = load_settings({"FRUITS_BUCKET": BUCKET})
    staged_wheels(settings, "ec2", Client(error="AccessDenied"))
    assert "cannot check the staged wheels" in capsys.readouterr().out
    with pytest.raises(ClientError):
        staged_wheels(settings, "ec2", Client(error="SlowDown"))
