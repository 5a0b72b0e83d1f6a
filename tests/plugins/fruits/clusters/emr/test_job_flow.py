"""The EMR job flow request, its step logs and its bootstrap."""

from __future__ import annotations

from dag_support import BUCKET, CODE, ROOT

from fruits.clusters.emr import job_flow, step_log_key
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


def test_bootstrap_never_installs_pyspark():
    script = (ROOT / "plugins" / "fruits" / "emr" / "bootstrap.sh").read_text()
    assert "python3.11" in script and "pip install" in script
    assert "pip install pyspark" not in script
