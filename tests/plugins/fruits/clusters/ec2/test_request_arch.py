"""The ec2 nodes' architecture (FRUITS_EC2_ARCH), their wheels and their s3a jars
(FRUITS_EC2_JARS_URI), from the launch request to the user data."""

from __future__ import annotations

import re
import subprocess

import pytest
from dag_support import BUCKET, REGION, ROOT

from fruits.clusters.ec2 import user_data as ec2
from fruits.clusters.ec2.request import cluster_request
from fruits.env_values import ConfigError
from fruits.settings import load_settings
from fruits.storage.wheels import node_wheels

CODE = {"prefix": f"s3://{BUCKET}/code/v1/"}
SCRIPT = ROOT / "plugins" / "fruits" / "clusters" / "ec2" / "node" / "user_data.sh"


def request(**env: str) -> dict:
    settings = load_settings({"FRUITS_BUCKET": BUCKET, **env})
    return cluster_request(settings, name="n", code=CODE, run_key="k", timeout=600)


def test_graviton_picks_m7g_the_arm64_ami_and_the_arm64_wheels():
    x86, arm = request(), request(FRUITS_EC2_ARCH="arm64")
    assert x86["image_id"].endswith("al2023-ami-kernel-default-x86_64")
    assert arm["image_id"].endswith("al2023-ami-kernel-default-arm64")
    assert [x86[r]["InstanceType"] for r in ("primary", "workers")] == ["m5.xlarge"] * 2
    assert [arm[r]["InstanceType"] for r in ("primary", "workers")] == ["m7g.xlarge"] * 2
    jobs = ROOT / "spark_jobs"
    assert x86["user_data"]["wheels_uri"] == node_wheels("ec2", "x86_64", jobs).uri(BUCKET)
    assert arm["user_data"]["wheels_uri"] == node_wheels("ec2", "arm64", jobs).uri(BUCKET)
    # an own AMI and own types are kept, when of the same architecture
    own = request(
        FRUITS_EC2_ARCH="arm64", FRUITS_EC2_AMI="ami-0123", FRUITS_EC2_WORKER_TYPE="c7gn.2xlarge"
    )
    assert own["image_id"] == "ami-0123" and own["workers"]["InstanceType"] == "c7gn.2xlarge"
    with pytest.raises(ConfigError, match="FRUITS_EC2_WORKER_TYPE=m6i.xlarge is not an arm64"):
        request(FRUITS_EC2_ARCH="arm64", FRUITS_EC2_WORKER_TYPE="m6i.xlarge")
    with pytest.raises(ConfigError, match="FRUITS_EC2_PRIMARY_TYPE=t4g.large is not an x86_64"):
        request(FRUITS_EC2_PRIMARY_TYPE="t4g.large")


def test_the_jars_uri_reaches_the_user_data_and_is_checked():
    assert request()["user_data"]["jars_uri"] == ""
    jars = request(FRUITS_EC2_JARS_URI=f"s3://{BUCKET}/jars/hadoop-aws-3.5.0")
    assert jars["user_data"]["jars_uri"] == f"s3://{BUCKET}/jars/hadoop-aws-3.5.0/"
    with pytest.raises(ConfigError, match="FRUITS_EC2_JARS_URI"):
        request(FRUITS_EC2_JARS_URI="https://example.invalid/jars/")
    values = {**jars["user_data"], "role": "primary", "master_host": "", "region": REGION}
    script = ec2.render_user_data(values)
    assert f"JARS_URI='s3://{BUCKET}/jars/hadoop-aws-3.5.0/'" in script
    for bad in ({"wheels_uri": f"s3://{BUCKET}/code/v1/"}, {"jars_uri": "/tmp/jars"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ec2.render_user_data({**values, **bad})


def _spark_jars_conf(jars_line: str) -> str:
    """The spark-defaults line user_data.sh writes for the s3a jars, evaluated by bash."""
    (line,) = [x for x in SCRIPT.read_text().splitlines() if "SPARK_JARS_LINE:-" in x]
    env = {
        "SPARK_JARS_LINE": jars_line,
        "HADOOP_AWS_COORDINATE": "org.apache.hadoop:hadoop-aws:3.5.0",
    }
    done = subprocess.run(["bash", "-c", f"cat <<EOF\n{line}\nEOF"], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return re.sub(r"\s+", " ", done.stdout.strip())


def test_spark_takes_the_copied_jars_or_else_maven():
    assert _spark_jars_conf("") == "spark.jars.packages org.apache.hadoop:hadoop-aws:3.5.0"
    copied = "spark.jars /opt/fruits/jars/a.jar,/opt/fruits/jars/b.jar"
    assert _spark_jars_conf(copied) == copied
    script = SCRIPT.read_text()
    # copied only when set, and every jar of the folder on spark.jars
    assert re.search(r'if \[ -n "\$JARS_URI" \]; then\n\s+aws s3 cp --recursive', script)
