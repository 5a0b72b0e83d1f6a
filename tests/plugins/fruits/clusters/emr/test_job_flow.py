"""The EMR job flow request, its step logs and its bootstrap action."""

from __future__ import annotations

import subprocess

import pytest
from dag_support import BUCKET, CODE, ROOT

from fruits.clusters.emr.job_flow import job_flow
from fruits.clusters.emr.step_sensor import step_log_key
from fruits.env_values import ConfigError
from fruits.settings import load_settings
from fruits.storage.wheels import node_wheels


def test_job_flow_request(tmp_path):
    base = {"FRUITS_BUCKET": BUCKET}
    request = job_flow(load_settings(base), name="fruits run", code=CODE)
    assert request["ReleaseLabel"].startswith("emr-7.")
    assert request["Applications"] == [{"Name": "Spark"}]
    assert request["LogUri"] == f"s3://{BUCKET}/logs/emr/"
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert "Ec2SubnetId" not in request["Instances"]
    roles = [g["InstanceRole"] for g in request["Instances"]["InstanceGroups"]]
    assert roles == ["MASTER", "CORE"]  # no spot task nodes unless asked
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    (action,) = request["BootstrapActions"]
    emr_set = node_wheels("emr", "x86_64", ROOT / "spark_jobs")
    assert action["ScriptBootstrapAction"] == {
        "Path": CODE["bootstrap"],
        "Args": [CODE["requirements"], "/usr/bin/python3.11",
                 f"s3://{BUCKET}/wheels/{emr_set.digest}/x86_64/"],
    }  # fmt: skip
    types = {g["InstanceType"] for g in request["Instances"]["InstanceGroups"]}
    assert types == {"m5.xlarge"}
    env = next(c for c in request["Configurations"] if c["Classification"] == "spark-env")
    exported = env["Configurations"][0]["Properties"]
    assert exported["PYSPARK_PYTHON"] == exported["PYSPARK_DRIVER_PYTHON"] == "/usr/bin/python3.11"
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["project"] == "fruits-pipeline"  # the Airflow role's RunJobFlow condition
    assert tags["for-use-with-amazon-emr-managed-policies"] == "true"
    assert "{{" not in str(request)

    private = job_flow(
        load_settings(
            {
                **base,
                "FRUITS_EMR_SUBNET": "subnet-0abc",
                "FRUITS_EMR_TASK_SPOT_COUNT": "3",
                "FRUITS_EMR_TAGS": "team=vision,project=other",
            }
        ),
        name="n",
        code=CODE,
    )
    assert private["Instances"]["Ec2SubnetId"] == "subnet-0abc"
    task_group = private["Instances"]["InstanceGroups"][-1]
    assert (task_group["InstanceRole"], task_group["Market"], task_group["InstanceCount"]) == (
        "TASK",
        "SPOT",
        3,
    )
    tags = {t["Key"]: t["Value"] for t in private["Tags"]}
    assert tags["team"] == "vision" and tags["project"] == "fruits-pipeline"


def test_graviton_picks_m7g_and_the_arm64_wheels():
    env = {"FRUITS_BUCKET": BUCKET, "FRUITS_EMR_ARCH": "arm64", "FRUITS_EMR_TASK_SPOT_COUNT": "1"}
    request = job_flow(load_settings(env), name="n", code=CODE)
    types = {g["InstanceType"] for g in request["Instances"]["InstanceGroups"]}
    assert types == {"m7g.xlarge"}
    (action,) = request["BootstrapActions"]
    assert action["ScriptBootstrapAction"]["Args"][-1].endswith("/arm64/")
    # a type of the other architecture is refused when the settings are read
    with pytest.raises(ConfigError, match="FRUITS_EMR_CORE_TYPE=m5.xlarge is not an arm64"):
        load_settings({**env, "FRUITS_EMR_CORE_TYPE": "m5.xlarge"})
    with pytest.raises(ConfigError, match="FRUITS_EMR_ARCH='aarch64'"):
        load_settings({"FRUITS_EMR_ARCH": "aarch64"})


def test_step_log_location_follows_the_log_uri():
    assert step_log_key("s3n://b/logs/emr/", "j-1", "s-2") == (
        "b",
        "logs/emr/j-1/steps/s-2/stderr.gz",
    )
    assert step_log_key("s3://b/logs", "j-1", "s-2") == ("b", "logs/j-1/steps/s-2/stderr.gz")


BOOTSTRAP = ROOT / "plugins" / "fruits" / "clusters" / "emr" / "bootstrap.sh"
STUB = """#!/bin/bash
# {name}: records its arguments, does nothing else (this is no EMR node)
echo "{name} $*" >> "$CALLS"
{extra}
"""


def run_bootstrap(
    tmp_path, requirements: str, staged: bool = True
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """bootstrap.sh for real, with aws, sudo, dnf and the node's python as stubs that record
    what they were asked to do; ``aws s3 cp`` copies ``requirements`` into place, ``aws s3
    cp --recursive`` a wheels folder (with its index.json when ``staged``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    source = tmp_path / "requirements.txt"
    source.write_text(requirements)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "numpy-2.1.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"stand-in")
    if staged:
        (wheels / "index.json").write_text("{}")
    stubs = {
        # aws s3 cp URI DEST, aws s3 cp --recursive URI DEST/
        "aws": f'case "$*" in *--recursive*) mkdir -p "${{@: -1}}"; cp -r "{wheels}"/. '
        f'"${{@: -1}}" ;; *) cp "{source}" "${{@: -1}}" ;; esac',
        "sudo": "",
        "dnf": "",
        "python3.11": "cat > /dev/null",  # pip --version, and the import check on stdin
    }
    for name, extra in stubs.items():
        path = bin_dir / name
        path.write_text(STUB.format(name=name, extra=extra))
        path.chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.touch()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls)}
    done = subprocess.run(
        ["bash", str(BOOTSTRAP), "s3://b/code/v/requirements.txt", str(bin_dir / "python3.11"),
         "s3://b/wheels/0123abcd/x86_64/"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done, calls.read_text().splitlines()


def test_bootstrap_installs_the_jobs_requirements_offline_and_never_pyspark(tmp_path):
    done, calls = run_bootstrap(tmp_path / "ok", "numpy==2.1.0\npandas==2.3.3\n")
    assert done.returncode == 0, done.stderr
    assert "aws s3 cp --recursive --only-show-errors s3://b/wheels/0123abcd/x86_64/" in "\n".join(
        calls
    )
    installs = [c for c in calls if c.startswith("sudo ") and " pip install " in c]
    # one install, from the copied wheels only: no index, no pip upgrade from the index
    assert len(installs) == 1 and installs[0].endswith("requirements.txt"), calls
    assert " --no-index --find-links " in installs[0] and "/wheels " in installs[0], installs
    # wheels without their manifest are not staged: nothing is installed
    done, calls = run_bootstrap(tmp_path / "unstaged", "numpy==2.1.0\n", staged=False)
    assert done.returncode == 1
    assert "make stage-wheels" in done.stderr
    assert not any(" pip install " in c for c in calls), calls
    assert not any("pyspark" in c for c in calls), calls
    # a requirements file that names pyspark is refused before anything is installed
    done, calls = run_bootstrap(tmp_path / "bad", "numpy==2.1.0\npyspark==3.5.1\n")
    assert done.returncode == 1
    assert "refusing to install pyspark" in done.stderr
    assert not any(" pip install " in c for c in calls), calls
