"""Bad cloud settings fail a whole run (``dag.test()`` on moto's server) at its first
task, ``validate_params``, with the message that says what to change: nothing uploaded
(not even the bucket made) and no cluster, instance or local Spark process started."""

from __future__ import annotations

import pytest
from dag_support import BUCKET, EARLIER_BATCH, REGION, logical, task_states

from fruits.dev.sample_batch import write_batch
from fruits.storage.weights import weights_key

pytestmark = pytest.mark.usefixtures("airflow_db")

DATE = EARLIER_BATCH
CONF = {"weights": "random", "image_size": 64}
MISSING_SUBNET = "subnet-0123456789abcdef0"
MISSING_GROUP = "sg-0123456789abcdef0"


@pytest.fixture
def batch(fruits_env):
    folder = fruits_env / DATE
    write_batch(folder, per_label=1, labels=["Banana", "Kiwi"])
    return folder


def fails_at_validate_params(dag, aws, capfd, conf=CONF) -> str:
    """Run the DAG; assert it stopped at validate_params, having uploaded and started
    nothing; return the run's output."""
    dag_run = dag.test(logical_date=logical(DATE), run_conf=conf)
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert states["validate_params"] == "failed"
    assert states["create_bucket"] == states["create_job_flow"] == "upstream_failed"
    assert aws.s3.list_buckets()["Buckets"] == []  # nothing uploaded: no bucket even
    assert aws.clusters() == []
    assert aws.ec2.describe_instances()["Reservations"] == []
    return capfd.readouterr().out


def test_an_emr_subnet_without_emrs_tag_fails_the_run_at_once(
    load_dag, batch, aws, capfd, monkeypatch
):
    vpc = aws.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = aws.ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    monkeypatch.setenv("FRUITS_EMR_SUBNET", subnet)
    out = fails_at_validate_params(load_dag("emr"), aws, capfd)
    assert (
        f"FRUITS_EMR_SUBNET={subnet}: the subnet lacks the tag "
        "for-use-with-amazon-emr-managed-policies=true"
    ) in out
    assert (
        f"aws ec2 create-tags --region {REGION} --resources {subnet} "
        "--tags Key=for-use-with-amazon-emr-managed-policies,Value=true"
    ) in out


def test_an_emr_subnet_outside_the_connections_region_fails_the_run_at_once(
    load_dag, batch, aws, capfd, monkeypatch
):
    monkeypatch.setenv("FRUITS_EMR_SUBNET", MISSING_SUBNET)
    out = fails_at_validate_params(load_dag("emr"), aws, capfd)
    assert (
        f"FRUITS_EMR_SUBNET={MISSING_SUBNET}: the subnet is not in region {REGION} of "
        "connection aws_default: set the connection's region or FRUITS_EMR_SUBNET"
    ) in out


def test_an_ec2_security_group_that_does_not_exist_fails_the_run_at_once(
    load_dag, batch, aws, capfd, monkeypatch
):
    vpc = aws.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = aws.ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    monkeypatch.setenv("FRUITS_EC2_SUBNET", subnet)
    monkeypatch.setenv("FRUITS_EC2_SECURITY_GROUP", MISSING_GROUP)
    out = fails_at_validate_params(load_dag("ec2"), aws, capfd)
    assert (
        f"FRUITS_EC2_SECURITY_GROUP={MISSING_GROUP}: the security group is not in region "
        f"{REGION} of connection aws_default"
    ) in out


def test_local_under_a_distributed_executor_fails_the_run_at_once(
    load_dag, batch, aws, capfd, monkeypatch, fruits_env
):
    dag = load_dag("local")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    out = fails_at_validate_params(dag, aws, capfd)
    assert "FRUITS_COMPUTE=local cannot run under CeleryExecutor" in out
    scratch = fruits_env.parent / "scratch"
    assert not (scratch / "clusters").exists()  # no local cluster was started


def test_imagenet_weights_not_staged_fail_a_cloud_run_with_the_command_to_stage_them(
    load_dag, batch, aws, capfd, monkeypatch, tmp_path
):
    """The Airflow worker's Keras cache holds the file: a remote run still needs it staged."""
    cache = tmp_path / "keras" / "models"
    cache.mkdir(parents=True)
    (cache / weights_key("mobilenetv2").rsplit("/", 1)[-1]).write_bytes(b"cached")
    monkeypatch.setenv("KERAS_HOME", str(cache.parent))
    out = fails_at_validate_params(load_dag("ec2"), aws, capfd, {**CONF, "weights": "imagenet"})
    assert (
        f"imagenet weights for mobilenetv2 are not staged at s3://{BUCKET}/"
        f"{weights_key('mobilenetv2')}"
    ) in out
    assert f"`make stage-weights FRUITS_BUCKET={BUCKET}`" in out


@pytest.mark.parametrize("compute", ["emr", "ec2"])
def test_unstaged_wheels_fail_a_cloud_run_with_the_command_to_stage_them(
    load_dag, batch, aws, capfd, compute
):
    """The nodes install offline: without the staged wheels no cluster is started."""
    out = fails_at_validate_params(load_dag(compute), aws, capfd)
    assert f"the {compute} nodes' wheels (x86_64) are not staged at s3://{BUCKET}/wheels/" in out
    assert f"make stage-wheels FRUITS_BUCKET={BUCKET}" in out


def test_wheels_staged_for_another_architecture_do_not_count(
    load_dag, batch, aws, capfd, monkeypatch, staged_wheels
):
    (x86,) = staged_wheels(kinds=("emr",), arches=("x86_64",))
    monkeypatch.setenv("FRUITS_EMR_ARCH", "arm64")
    dag_run = load_dag("emr").test(logical_date=logical(DATE), run_conf=CONF)
    states = task_states(dag_run)
    assert states["validate_params"] == "failed" and aws.clusters() == []
    out = capfd.readouterr().out
    arm = x86.replace("/x86_64/", "/arm64/")
    assert f"the emr nodes' wheels (arm64) are not staged at {arm}" in out
