"""The nodes' wheels: the requirement sets, their hash and folder, the staging upload and
the check that they are there; and that the node requirements, the staging command and
the nodes' install lines agree."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from dag_support import BUCKET, CODE, ROOT

from fruits.clusters.ec2 import code_files
from fruits.clusters.emr.job_flow import job_flow
from fruits.dev.stage_wheels import download_command
from fruits.settings import load_settings
from fruits.storage.code_bundle import build_bundle
from fruits.storage.wheels import (
    PLATFORMS,
    node_set,
    node_wheels,
    requirements_hash,
    staged_manifest,
    upload_wheels,
    wheels_prefix,
)

JOBS = ROOT / "spark_jobs"


def pins(lines) -> dict[str, str]:
    return dict(line.split("==", 1) for line in lines)


def file_pins(text: str) -> dict[str, str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return pins(line for line in lines if line)


def constraint(name: str) -> str:
    (line,) = [x for x in (ROOT / "constraints.txt").read_text().splitlines()
               if x.lower().startswith(name + "==")]  # fmt: skip
    return line.split("==", 1)[1]


def test_the_sets_are_the_jobs_file_and_the_ec2_extras_as_constraints_pin_them():
    jobs = file_pins((JOBS / "requirements.txt").read_text())
    assert pins(node_set("emr", JOBS)) == jobs
    assert pins(node_set("ec2", JOBS)) == {
        **jobs, "pyspark": constraint("pyspark"), "boto3": constraint("boto3"),
    }  # fmt: skip
    assert "pyspark" not in pins(node_set("emr", JOBS))  # EMR brings its own Spark
    with pytest.raises(ValueError, match="node set"):
        node_set("serverless", JOBS)


def test_a_jobs_pin_the_constraints_contradict_is_refused(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "requirements.txt").write_text("numpy==1.0.0\n")
    (tmp_path / "constraints.txt").write_text("numpy==2.4.6\npyspark==4.3.0\nboto3==1.0\n")
    with pytest.raises(ValueError, match="numpy==1.0.0 but .* has numpy==2.4.6"):
        node_set("emr", tmp_path / "jobs")
    (tmp_path / "jobs" / "requirements.txt").write_text("Numpy==2.4.6\n")
    assert node_set("ec2", tmp_path / "jobs") == ["Numpy==2.4.6", "pyspark==4.3.0", "boto3==1.0"]


def test_the_hash_follows_the_pins_not_their_order_or_spelling():
    base = ["numpy==2.4.6", "pandas==2.3.3"]
    digest = requirements_hash(base)
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    assert requirements_hash(["pandas==2.3.3", "NumPy==2.4.6"]) == digest
    assert requirements_hash(["numpy==2.4.7", "pandas==2.3.3"]) != digest
    assert requirements_hash([*base, "boto3==1.44.8"]) != digest
    emr, ec2 = (node_wheels(kind, "x86_64", JOBS) for kind in ("emr", "ec2"))
    assert emr.digest != ec2.digest
    assert emr.prefix == f"wheels/{emr.digest}/x86_64/"
    assert (
        node_wheels("emr", "arm64", JOBS).uri(BUCKET) == f"s3://{BUCKET}/wheels/{emr.digest}/arm64/"
    )
    with pytest.raises(ValueError, match="aarch64"):
        wheels_prefix(emr.digest, "aarch64")


class Recording:
    """boto3's S3 client, recording the keys it writes, in order."""

    def __init__(self, client):
        self.client, self.written = client, []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def upload_file(self, path, bucket, key):
        self.written.append(key)
        return self.client.upload_file(path, bucket, key)

    def put_object(self, **kwargs):
        self.written.append(kwargs["Key"])
        return self.client.put_object(**kwargs)


def test_upload_sends_what_s3_lacks_and_the_manifest_last(hook, aws, tmp_path):
    wheels = node_wheels("emr", "arm64", JOBS)
    folder = tmp_path / "w"
    folder.mkdir()
    for name in (
        "numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl",
        "six-1.17.0-py3-none-any.whl",
    ):
        (folder / name).write_bytes(name.encode())
    (folder / ".downloaded.json").write_text("[]")  # the local marker stays local
    assert staged_manifest(aws.s3, BUCKET, wheels) is None
    client = Recording(aws.s3)
    sent = upload_wheels(client, BUCKET, wheels, folder)
    assert sorted(sent) == sorted(p.name for p in folder.glob("*.whl"))
    assert client.written[-1] == wheels.prefix + "index.json"  # last: a folder is whole
    assert sorted(aws.keys(wheels.prefix)) == sorted(
        wheels.prefix + n for n in [*sent, "index.json"]
    )
    manifest = staged_manifest(aws.s3, BUCKET, wheels)
    assert manifest["requirements"] == list(wheels.lines)
    assert manifest["arch"] == "arm64" and manifest["wheels"] == sorted(sent)
    # again: nothing to send; a changed file is sent again
    client = Recording(aws.s3)
    assert upload_wheels(client, BUCKET, wheels, folder) == []
    (folder / "six-1.17.0-py3-none-any.whl").write_bytes(b"a longer, different file")
    assert upload_wheels(client, BUCKET, wheels, folder) == ["six-1.17.0-py3-none-any.whl"]
    # the other architecture's folder is still missing
    assert staged_manifest(aws.s3, BUCKET, node_wheels("emr", "x86_64", JOBS)) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError):
        upload_wheels(aws.s3, BUCKET, wheels, empty)


def test_a_folder_without_its_manifest_is_not_staged(hook, aws):
    wheels = node_wheels("ec2", "x86_64", JOBS)
    aws.s3.put_object(Bucket=BUCKET, Key=wheels.prefix + "numpy-2.4.6-x.whl", Body=b"w")
    assert staged_manifest(aws.s3, BUCKET, wheels) is None
    aws.s3.put_object(Bucket=BUCKET, Key=wheels.prefix + "index.json", Body=json.dumps({}))
    assert staged_manifest(aws.s3, BUCKET, wheels) == {}


# --- the node requirements, the staging command and the nodes' installs agree ----------


def _install_lines(script: str) -> list[str]:
    """The ``pip install`` commands of a shell script, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", script)
    lines = (line.strip() for line in joined.splitlines())
    return [line for line in lines if "pip install" in line and not line.startswith("#")]


def test_node_requirements_staging_command_and_node_installs_agree(tmp_path):
    settings = load_settings({"FRUITS_BUCKET": BUCKET})
    bundle = build_bundle(JOBS, tmp_path / "bundle", code_files())
    shipped = {
        "emr": file_pins((bundle.folder / "requirements.txt").read_text()),
        "ec2": file_pins((bundle.folder / "node-requirements.txt").read_text()),
    }
    constraints = ROOT / "constraints.txt"
    for kind in ("emr", "ec2"):
        for arch in ("x86_64", "arm64"):
            wheels = node_wheels(kind, arch, JOBS)
            cmd = download_command(wheels, tmp_path / "d", constraints, None)
            staged = [w for w in cmd if "==" in w]
            # the staging downloads exactly the pins the node installs, with the constraints
            assert pins(staged) == shipped[kind], (kind, arch)
            assert cmd[cmd.index("-c") + 1] == str(constraints)
            # wheels only, and their dependencies too (the nodes reach no index)
            assert "--only-binary=:all:" in cmd and "--no-deps" not in cmd
            assert cmd[cmd.index("--python-version") + 1] == "3.11"
            tags = [cmd[i + 1] for i, w in enumerate(cmd) if w == "--platform"]
            machine = {"x86_64": "x86_64", "arm64": "aarch64"}[arch]
            assert tags == list(PLATFORMS[arch]) and all(t.endswith(machine) for t in tags)

    # EMR: the bootstrap installs the shipped requirements.txt, offline, from the wheels
    # folder the job flow names (the set's hash and arch)
    (install,) = _install_lines((ROOT / "plugins/fruits/clusters/emr/bootstrap.sh").read_text())
    words = shlex.split(install)
    assert "--no-index" in words and words[words.index("-r") + 1].endswith("/requirements.txt")
    args = job_flow(settings, name="n", code=CODE)["BootstrapActions"][0]["ScriptBootstrapAction"]
    assert args["Args"][0] == CODE["requirements"]
    assert args["Args"][2] == node_wheels("emr", "x86_64", JOBS).uri(BUCKET)
    # ec2: the user data installs the shipped node-requirements.txt, offline, likewise
    script = (ROOT / "plugins/fruits/clusters/ec2/node/user_data.sh").read_text()
    installs = [i for i in _install_lines(script) if "-m venv" not in i]
    assert len(installs) == 1, installs
    words = shlex.split(installs[0])
    assert "--no-index" in words and "--find-links" in words
    assert words[words.index("-r") + 1].endswith("/code/node-requirements.txt")
    from fruits.clusters.ec2.request import cluster_request

    request = cluster_request(settings, name="n", code={"prefix": f"s3://{BUCKET}/code/v/"},
                              run_key="k", timeout=60)  # fmt: skip
    assert request["user_data"]["wheels_uri"] == node_wheels("ec2", "x86_64", JOBS).uri(BUCKET)
