"""The EMR job flow request, its step logs and its bootstrap action."""

from __future__ import annotations

import subprocess

from dag_support import BUCKET, CODE, ROOT

from fruits.clusters.emr.job_flow import job_flow
from fruits.clusters.emr.step_sensor import step_log_key
from fruits.settings import load_settings


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
    assert action["ScriptBootstrapAction"] == {
        "Path": CODE["bootstrap"],
        "Args": [CODE["requirements"], "/usr/bin/python3.11"],
    }
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


def run_bootstrap(tmp_path, requirements: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """bootstrap.sh for real, with aws, sudo, dnf and the node's python as stubs that record
    what they were asked to do; ``aws s3 cp`` copies ``requirements`` into place."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    source = tmp_path / "requirements.txt"
    source.write_text(requirements)
    stubs = {
        "aws": f'cp "{source}" "${{@: -1}}"',  # aws s3 cp URI DEST
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
        ["bash", str(BOOTSTRAP), "s3://b/code/v/requirements.txt", str(bin_dir / "python3.11")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done, calls.read_text().splitlines()


def test_bootstrap_installs_the_jobs_requirements_and_never_pyspark(tmp_path):
    done, calls = run_bootstrap(tmp_path / "ok", "numpy==2.1.0\ntensorflow-cpu==2.21.0\n")
    assert done.returncode == 0, done.stderr
    installs = [c for c in calls if c.startswith("sudo ") and " pip install " in c]
    assert installs and installs[-1].endswith("requirements.txt"), calls
    assert not any("pyspark" in c for c in calls), calls
    # a requirements file that names pyspark is refused before anything is installed
    done, calls = run_bootstrap(tmp_path / "bad", "numpy==2.1.0\npyspark==3.5.1\n")
    assert done.returncode == 1
    assert "refusing to install pyspark" in done.stderr
    assert not any(" pip install " in c for c in calls), calls
