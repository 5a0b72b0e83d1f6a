"""``make stage-wheels`` with pip played by a stub (the tests download nothing): what it
asks pip for, what it skips when done, and the upload to moto with the manifest."""

from __future__ import annotations

import json
import subprocess

import pytest
from dag_support import BUCKET, ROOT

from fruits.dev import stage_wheels
from fruits.storage.wheels import node_wheels, staged_manifest


@pytest.fixture
def pip(monkeypatch):
    """A stand-in for ``pip download`` / ``pip wheel``: writes one placeholder wheel per
    requirement into the destination and records each command."""
    calls: list[list[str]] = []

    def run(cmd, check):
        calls.append(cmd)
        dest = cmd[cmd.index("-d" if "download" in cmd else "-w") + 1]
        for word in cmd:
            if "==" in word:
                name, version = word.split("==")
                with open(f"{dest}/{name}-{version}-py3-none-any.whl", "w") as f:
                    f.write("placeholder")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(stage_wheels.subprocess, "run", run)
    return calls


def test_stages_both_sets_and_arches_once_and_builds_pyspark_once(pip, tmp_path, moto, hook, aws):
    argv = ["--bucket", BUCKET, "--cache", str(tmp_path), "--endpoint-url", moto]
    assert stage_wheels.main(argv) == 0
    wheel_builds = [c for c in pip if "wheel" in c]
    downloads = [c for c in pip if "download" in c]
    assert len(downloads) == 4  # emr and ec2, x86_64 and arm64
    assert len(wheel_builds) == 1 and "--no-deps" in wheel_builds[0]
    assert wheel_builds[0][-1].startswith("pyspark==")
    ec2_downloads = [c for c in downloads if any(w.startswith("pyspark==") for w in c)]
    assert len(ec2_downloads) == 2
    assert all(c[c.index("--find-links") + 1] == str(tmp_path / "built") for c in ec2_downloads)
    for kind in ("emr", "ec2"):
        for arch in ("x86_64", "arm64"):
            wheels = node_wheels(kind, arch, ROOT / "spark_jobs")
            manifest = staged_manifest(aws.s3, BUCKET, wheels)
            assert manifest["requirements"] == list(wheels.lines), (kind, arch)
            assert len(manifest["wheels"]) == len(wheels.lines)
    # again: nothing downloaded or built, nothing uploaded but the manifests
    pip.clear()
    assert stage_wheels.main(argv) == 0
    assert pip == []


def test_local_only_uploads_nothing_and_a_missing_bucket_fails(pip, tmp_path, moto, capsys):
    base = ["--cache", str(tmp_path), "--endpoint-url", moto, "--sets", "emr"]
    assert stage_wheels.main([*base, "--arch", "arm64", "--local-only"]) == 0
    assert [c for c in pip if "download" in c][0].count("--platform") == 3
    done = json.loads((next(tmp_path.glob("*/arm64")) / stage_wheels.DONE).read_text())
    assert done == list(node_wheels("emr", "arm64", ROOT / "spark_jobs").lines)
    assert stage_wheels.main([*base, "--bucket", "no-such-bucket"]) == 1
    assert "cannot stage wheels to s3://no-such-bucket/" in capsys.readouterr().err
