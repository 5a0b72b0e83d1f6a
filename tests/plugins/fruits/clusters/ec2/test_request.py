"""The ec2 backend's requests, without a run: what ``create_job_flow`` asks EC2 for is
valid for EC2's own API model (moto accepts fields that EC2 rejects), safe by default,
and what the Airflow role of infra/fruits-pipeline.yaml allows; the steps it runs."""

from __future__ import annotations

import pytest
from dag_support import ROOT

from fruits.clusters import ec2
from fruits.clusters.common.spark_steps import build_steps, for_standalone
from fruits.settings import load_settings

CODE = {
    "prefix": "s3://my-fruits/code/abc123/",
    "py_files": "s3://my-fruits/code/abc123/fruits_spark.zip",
    "featurize": "s3://my-fruits/code/abc123/featurize.py",
    "reduce": "s3://my-fruits/code/abc123/reduce.py",
    "weights": "s3://my-fruits/code/abc123/weights/w.h5",
}


def request(env: dict | None = None) -> dict:
    settings = load_settings({"FRUITS_COMPUTE": "ec2", "FRUITS_BUCKET": "my-fruits", **(env or {})})
    return ec2.cluster_request(settings, name="fruits_pipeline test", code=CODE,
                               run_key="manual-1-ab12cd34", timeout=3600)  # fmt: skip


def run_instances(cluster: dict, role: str) -> dict:
    """The whole RunInstances request the operator sends for ``role``."""
    from fruits.clusters.ec2.attempt import client_token
    from fruits.clusters.ec2.request import run_instances_request
    from fruits.clusters.ec2.user_data import render_user_data

    values = {**cluster["user_data"], "region": "eu-west-1", "role": role,
              "master_host": "10.0.0.5" if role == "worker" else ""}  # fmt: skip
    return run_instances_request(
        cluster, role, user_data=render_user_data(values), attempt="1-0a1b2c3d",
        client_token=client_token("manual__1", cluster["cluster_id"], 1, role),
    )  # fmt: skip


@pytest.mark.parametrize("role", ["primary", "worker"])
def test_the_run_instances_request_is_valid_for_ec2s_api_model(role):
    import boto3
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    shape = (
        boto3.client(
            "ec2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        .meta.service_model.operation_model("RunInstances")
        .input_shape
    )
    cluster = request({"FRUITS_EC2_WORKER_SPOT": "true", "FRUITS_EC2_SUBNET": "subnet-1",
                       "FRUITS_EC2_SECURITY_GROUP": "sg-1"})  # fmt: skip
    validate_parameters(run_instances(cluster, role), shape)  # raises on any bad field
    broken = {**run_instances(cluster, role), "MetadataOption": {"HttpTokens": "required"}}
    with pytest.raises(ParamValidationError):  # the check can fail: a misspelt field
        validate_parameters(broken, shape)


def test_nodes_are_locked_down_and_only_workers_are_spot():
    cluster = request({"FRUITS_EC2_WORKER_SPOT": "true", "FRUITS_EC2_WORKER_COUNT": "3"})
    primary, workers = run_instances(cluster, "primary"), run_instances(cluster, "worker")
    assert (primary["MinCount"], primary["MaxCount"]) == (1, 1)
    # as many workers as EC2 grants, up to 3: the cluster starts at a quorum
    assert (workers["MinCount"], workers["MaxCount"]) == (1, 3)
    assert primary["ClientToken"] != workers["ClientToken"]
    for req in (primary, workers):
        assert req["MetadataOptions"]["HttpTokens"] == "required"  # IMDSv2 only
        assert req["InstanceInitiatedShutdownBehavior"] == "terminate"
        (disk,) = req["BlockDeviceMappings"]
        assert disk["Ebs"]["Encrypted"] is True and disk["Ebs"]["DeleteOnTermination"] is True
        assert "KeyName" not in req  # no SSH key pair
        assert req["IamInstanceProfile"] == {"Name": "fruits-ec2-node-role"}
        assert req["ImageId"].startswith("resolve:ssm:/aws/service/ami-amazon-linux-latest/")
        assert {s["ResourceType"] for s in req["TagSpecifications"]} == {
            "instance", "volume", "network-interface"}  # fmt: skip
        tags = {t["Key"]: t["Value"] for t in req["TagSpecifications"][0]["Tags"]}
        assert tags["fruits:attempt"] == "1-0a1b2c3d"
        assert tags["fruits:cluster-id"] == cluster["cluster_id"] == "ec2-manual-1-ab12cd34"
        assert tags["fruits:bucket"] == "my-fruits"  # what clear_leftovers may reap
        assert "shutdown -h" in req["UserData"]
    assert "InstanceMarketOptions" not in primary  # never a spot primary
    assert workers["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "InstanceMarketOptions" not in run_instances(request(), "worker")  # off by default
    assert cluster["log_prefix"] == "s3://my-fruits/logs/ec2/ec2-manual-1-ab12cd34/"
    # the dead-man switch outlives start-up plus the steps' timeout
    assert cluster["user_data"]["lifetime_minutes"] * 60 > 1200 + 3600


def test_the_request_is_what_the_airflow_policy_allows():
    """Tags, IMDSv2 and the instance profile the policy's conditions require."""

    from infra.check_policies import load

    template = load(ROOT / "infra" / "fruits-pipeline.yaml")
    doc = template["Resources"]["AirflowPolicy"]["Properties"]["PolicyDocument"]
    launch = next(st for st in doc["Statement"] if st.get("Sid") == "LaunchTaggedNodes")
    req = run_instances(request(), "worker")
    tags = {t["Key"]: t["Value"] for t in req["TagSpecifications"][0]["Tags"]}
    for key, value in launch["Condition"]["StringEquals"].items():
        if key.startswith("aws:RequestTag/"):
            assert tags[key.removeprefix("aws:RequestTag/")] == value
    assert launch["Condition"]["StringEquals"]["ec2:MetadataHttpTokens"] == "required"
    node_role = template["Parameters"]["Ec2NodeRoleName"]["Default"]
    assert req["IamInstanceProfile"]["Name"] == node_role
    assert request()["log_prefix"].startswith("s3://my-fruits/logs/ec2/")  # the nodes may write


def test_steps_run_on_the_primarys_master_through_s3a_with_the_nodes_code():
    run = {"model": "mobilenetv2", "image_size": 224, "variance": 0.95}
    steps = build_steps(bucket="my-fruits", batch="2026-11-24", run_key="k1", code=CODE, run=run)
    featurize, reduce = for_standalone(
        steps, master_url="spark://10.0.0.5:7077", spark_submit="/opt/s/spark-submit",
        code_prefix=CODE["prefix"], code_dir="/opt/fruits/code",
    )  # fmt: skip
    assert featurize[:5] == ["/opt/s/spark-submit", "--master", "spark://10.0.0.5:7077",
                             "--deploy-mode", "client"]  # fmt: skip
    assert featurize[featurize.index("--py-files") + 1] == "/opt/fruits/code/fruits_spark.zip"
    assert "/opt/fruits/code/featurize.py" in featurize
    assert featurize[featurize.index("--weights") + 1] == "/opt/fruits/code/weights/w.h5"
    assert featurize[featurize.index("--input") + 1] == "s3a://my-fruits/raw/batch=2026-11-24/"
    # read through s3a, named as s3:// in the outputs, as on EMR
    named = featurize[featurize.index("--name-input-as") + 1]
    assert named == "s3://my-fruits/raw/batch=2026-11-24/"
    assert reduce[reduce.index("--input") + 1] == featurize[featurize.index("--output") + 1]
    assert reduce[reduce.index("--input") + 1].startswith(
        "s3a://my-fruits/runs/_staging/batch=2026-11-24/k1/"
    )
    assert [a for a in featurize + reduce if a.startswith("s3://")] == [named]
    with pytest.raises(ValueError, match="only spark-submit"):
        for_standalone([{"Name": "x", "HadoopJarStep": {"Args": ["hive"]}}],
                       master_url="m", spark_submit="s", code_prefix="c", code_dir="d")  # fmt: skip


def test_bad_ec2_settings_fail_with_the_variable_named():
    for bad in (
        {"FRUITS_EC2_WORKER_COUNT": "0"},
        {"FRUITS_EC2_WORKER_SPOT": "maybe"},
        {"FRUITS_EC2_TAGS": "novalue"},
        {"FRUITS_EC2_VOLUME_GB": "4"},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            load_settings(bad)
