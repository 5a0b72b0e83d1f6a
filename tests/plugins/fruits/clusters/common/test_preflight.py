"""The backends' pre-flight checks on moto: subnets with and without EMR's tag, ids that
do not exist (or exist in another region than the connection's), security groups, and
the local backend under a distributed executor."""

from __future__ import annotations

import boto3
import pytest
import wheel_fixtures
from botocore.exceptions import ClientError
from dag_support import BUCKET, REGION

from fruits.clusters import backend
from fruits.clusters.common import preflight
from fruits.clusters.common.preflight import PreflightError
from fruits.settings import load_settings

MISSING_SUBNET = "subnet-0123456789abcdef0"
MISSING_GROUP = "sg-0123456789abcdef0"
TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
RUN = {"model": "mobilenetv2", "weights": "random"}
staged_wheels = wheel_fixtures.staged_wheels  # a fixture: the nodes' wheels, staged on moto


@pytest.fixture
def network(aws):
    """A VPC with a subnet tagged for EMR, one untagged, and a security group; and a
    second VPC's group."""
    vpc = aws.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    tagged = aws.ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    aws.ec2.create_tags(Resources=[tagged], Tags=[TAG])
    plain = aws.ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24")["Subnet"]["SubnetId"]
    group = aws.ec2.create_security_group(GroupName="nodes", Description="n", VpcId=vpc)
    other = aws.ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    foreign = aws.ec2.create_security_group(GroupName="other", Description="o", VpcId=other)
    return {"vpc": vpc, "tagged": tagged, "plain": plain, "group": group["GroupId"],
            "other_vpc": other, "foreign_group": foreign["GroupId"]}  # fmt: skip


def emr(**env: str):
    return load_settings({"FRUITS_COMPUTE": "emr", "FRUITS_BUCKET": BUCKET, **env})


def ec2(**env: str):
    return load_settings({"FRUITS_COMPUTE": "ec2", "FRUITS_BUCKET": BUCKET, **env})


def test_emr_accepts_a_tagged_subnet_or_none(network, staged_wheels):
    staged_wheels()  # the backends' pre-flight checks those too (test_preflight_wheels.py)
    backend("emr").preflight(emr(FRUITS_EMR_SUBNET=network["tagged"]), RUN)
    backend("emr").preflight(emr(), RUN)  # unset: EMR picks the default VPC, no call made


def test_emr_refuses_an_untagged_subnet_naming_the_tag_and_the_command(network):
    subnet = network["plain"]
    with pytest.raises(PreflightError) as caught:
        backend("emr").preflight(emr(FRUITS_EMR_SUBNET=subnet), RUN)
    assert str(caught.value) == (
        f"FRUITS_EMR_SUBNET={subnet}: the subnet lacks the tag "
        "for-use-with-amazon-emr-managed-policies=true, without which EMR's managed service "
        "policy (AmazonEMRServicePolicy_v2) cannot launch a cluster in it. This pipeline "
        f"never changes your network; to tag it: aws ec2 create-tags --region {REGION} "
        f"--resources {subnet} --tags Key=for-use-with-amazon-emr-managed-policies,Value=true"
    )


def test_a_subnet_that_is_not_in_the_connections_region_is_named_so(network, aws, moto):
    elsewhere = boto3.client("ec2", endpoint_url=moto, region_name="eu-west-1")
    vpc = elsewhere.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    far = elsewhere.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    elsewhere.create_tags(Resources=[far], Tags=[TAG])
    for subnet in (MISSING_SUBNET, far, "not-a-subnet"):
        with pytest.raises(PreflightError) as caught:
            backend("emr").preflight(emr(FRUITS_EMR_SUBNET=subnet), RUN)
        assert str(caught.value) == (
            f"FRUITS_EMR_SUBNET={subnet}: the subnet is not in region {REGION} of connection "
            "aws_default: set the connection's region or FRUITS_EMR_SUBNET"
        )


def test_ec2_accepts_its_subnet_and_group_of_one_vpc(network, staged_wheels):
    staged_wheels()
    backend("ec2").preflight(
        ec2(FRUITS_EC2_SUBNET=network["plain"], FRUITS_EC2_SECURITY_GROUP=network["group"]), RUN
    )  # the EMR tag is no concern of plain EC2
    backend("ec2").preflight(ec2(FRUITS_EC2_SECURITY_GROUP=network["foreign_group"]), RUN)
    backend("ec2").preflight(ec2(), RUN)


def test_ec2_refuses_a_missing_subnet_or_group_or_a_group_of_another_vpc(network):
    cases = {
        (MISSING_SUBNET, network["group"]): (
            f"FRUITS_EC2_SUBNET={MISSING_SUBNET}: the subnet is not in region {REGION} of "
            "connection aws_default: set the connection's region or FRUITS_EC2_SUBNET"
        ),
        (network["plain"], MISSING_GROUP): (
            f"FRUITS_EC2_SECURITY_GROUP={MISSING_GROUP}: the security group is not in region "
            f"{REGION} of connection aws_default: set the connection's region or "
            "FRUITS_EC2_SECURITY_GROUP"
        ),
        (network["plain"], network["foreign_group"]): (
            f"FRUITS_EC2_SECURITY_GROUP={network['foreign_group']}: the security group is in "
            f"{network['other_vpc']}, the subnet in {network['vpc']}: EC2 launches an instance "
            f"only with a group of its subnet's VPC: choose a group of {network['vpc']}"
        ),
    }
    for (subnet, group), message in cases.items():
        settings = ec2(FRUITS_EC2_SUBNET=subnet, FRUITS_EC2_SECURITY_GROUP=group)
        with pytest.raises(PreflightError) as caught:
            backend("ec2").preflight(settings, RUN)
        assert str(caught.value) == message


class Denied:
    """An EC2 client whose connection may not describe anything."""

    class meta:
        region_name = REGION

    def describe_subnets(self, **_):
        raise ClientError({"Error": {"Code": "UnauthorizedOperation"}}, "DescribeSubnets")

    describe_security_groups = describe_subnets


class Throttled(Denied):
    def describe_subnets(self, **_):
        raise ClientError({"Error": {"Code": "RequestLimitExceeded"}}, "DescribeSubnets")


def test_a_check_the_connection_may_not_make_is_skipped_and_said(capsys):
    settings = emr(FRUITS_EMR_SUBNET=MISSING_SUBNET)
    preflight.emr_network(settings, Denied())
    preflight.ec2_network(ec2(FRUITS_EC2_SUBNET="subnet-1", FRUITS_EC2_SECURITY_GROUP="sg-1"),
                          Denied())  # fmt: skip
    out = capsys.readouterr().out
    assert f"cannot check FRUITS_EMR_SUBNET={MISSING_SUBNET} (UnauthorizedOperation)" in out
    assert "FRUITS_EC2_SECURITY_GROUP=sg-1 (UnauthorizedOperation): skipped" in out
    with pytest.raises(ClientError, match="RequestLimitExceeded"):  # retried by the task
        preflight.emr_network(settings, Throttled())


@pytest.mark.parametrize(
    "executor, refused",
    [
        ("LocalExecutor", None),
        ("SequentialExecutor", None),
        ("LocalExecutor,CeleryExecutor", None),  # the default (first) runs this DAG
        ("=LocalExecutor;team_a=CeleryExecutor", None),
        ("team_a=CeleryExecutor;=LocalExecutor", None),
        ("CeleryExecutor", "CeleryExecutor"),
        ("KubernetesExecutor", "KubernetesExecutor"),
        ("CeleryKubernetesExecutor", "CeleryKubernetesExecutor"),
        ("airflow.providers.celery.executors.celery_executor.CeleryExecutor", "CeleryExecutor"),
        ("CeleryExecutor, LocalExecutor", "CeleryExecutor"),
        ("ecs:airflow.providers.amazon.aws.executors.ecs.ecs_executor.AwsEcsExecutor",
         "AwsEcsExecutor"),
        ("my_company.executors.MyExecutor", "MyExecutor"),
    ],
)  # fmt: skip
def test_local_runs_only_under_a_single_host_executor(executor, refused):
    if refused is None:
        preflight.single_host(executor)
        return
    with pytest.raises(PreflightError) as caught:
        preflight.single_host(executor)
    assert str(caught.value).startswith(
        f"FRUITS_COMPUTE=local cannot run under {refused} (Airflow's [core] executor = "
        f"{executor!r}): the local backend's Spark cluster, its scratch folder and the sensor"
    )
    assert str(caught.value).endswith(
        "Set FRUITS_COMPUTE=emr or ec2, or run Airflow with the LocalExecutor"
    )


def test_local_reads_the_executor_from_airflows_config(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    with pytest.raises(PreflightError, match="cannot run under CeleryExecutor"):
        backend("local").preflight(load_settings({}), RUN)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    backend("local").preflight(load_settings({}), RUN)
