"""Checks a backend's ``preflight`` makes in ``validate_params``, before anything is
uploaded and before any cluster exists: a bad cloud setting fails the run in seconds,
saying what to change, instead of minutes later in ``create_job_flow``.

They only look (``Describe*`` calls through the run's AWS connection, so its region and
endpoint are the ones checked); they never change the user's network. A check the
connection is not allowed to make is skipped with a warning: the cluster request will
still say what is wrong, later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# the tag EMR's managed service policy (AmazonEMRServicePolicy_v2) needs on a subnet
EMR_SUBNET_TAG = ("for-use-with-amazon-emr-managed-policies", "true")
# executors that run every task of a run on this host (Airflow's in-process ones included)
SINGLE_HOST_EXECUTORS = frozenset(
    {"LocalExecutor", "SequentialExecutor", "DebugExecutor", "MockExecutor"}
)
DENIED = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})
_NOT_FOUND = {
    "subnet": ("InvalidSubnetID.NotFound", "InvalidSubnetID.Malformed", "InvalidSubnetId"),
    "security group": ("InvalidGroup.NotFound", "InvalidGroupId.Malformed"),
}


class PreflightError(ValueError):
    """A setting the run cannot work with; the message says what to change."""


def ec2_client(aws_conn_id: str) -> Any:
    """boto3's EC2 client of the Airflow connection (its region and endpoint)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=aws_conn_id, client_type="ec2").conn


def error_code(exc: BaseException) -> str:
    """A botocore ClientError's code ("" for anything else)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _described(
    describe: Callable[[], list[dict]],
    kind: str,
    ident: str,
    setting: str,
    client: Any,
    conn_id: str,
) -> dict | None:
    """What ``describe()`` found of the subnet or security group ``ident`` in the
    connection's region; PreflightError when it is not there; None when the connection
    may not look."""
    from botocore.exceptions import ClientError

    try:
        found = describe()
    except ClientError as exc:
        if error_code(exc) in DENIED:
            print(f"preflight: cannot check {setting}={ident} ({error_code(exc)}): skipped")
            return None
        if error_code(exc) not in _NOT_FOUND[kind]:
            raise  # throttling, a network error: the task's retries may help
        found = []
    if not found:
        raise PreflightError(
            f"{setting}={ident}: the {kind} is not in region {client.meta.region_name} of "
            f"connection {conn_id}: set the connection's region or {setting}"
        )
    return found[0]


def check_subnet(client: Any, subnet: str, setting: str, conn_id: str) -> dict | None:
    """The subnet, described; PreflightError when the connection's region lacks it."""
    return _described(
        lambda: client.describe_subnets(SubnetIds=[subnet])["Subnets"],
        "subnet", subnet, setting, client, conn_id,
    )  # fmt: skip


def check_security_group(
    client: Any, group: str, setting: str, conn_id: str, vpc: str | None = None
) -> dict | None:
    """The security group, described; PreflightError when the connection's region lacks
    it, or when it belongs to another VPC than ``vpc`` (the subnet's)."""
    described = _described(
        lambda: client.describe_security_groups(GroupIds=[group])["SecurityGroups"],
        "security group", group, setting, client, conn_id,
    )  # fmt: skip
    if described and vpc and described.get("VpcId") != vpc:
        raise PreflightError(
            f"{setting}={group}: the security group is in {described.get('VpcId')}, the "
            f"subnet in {vpc}: EC2 launches an instance only with a group of its subnet's "
            f"VPC: choose a group of {vpc}"
        )
    return described


def check_emr_subnet_tag(subnet: dict, setting: str, region: str) -> None:
    """EMR's managed policy launches only into subnets carrying :data:`EMR_SUBNET_TAG`."""
    key, value = EMR_SUBNET_TAG
    tags = {t.get("Key"): t.get("Value") for t in subnet.get("Tags", [])}
    if tags.get(key) == value:
        return
    ident = subnet["SubnetId"]
    raise PreflightError(
        f"{setting}={ident}: the subnet lacks the tag {key}={value}, without which EMR's "
        f"managed service policy (AmazonEMRServicePolicy_v2) cannot launch a cluster in it. "
        f"This pipeline never changes your network; to tag it: aws ec2 create-tags "
        f"--region {region} --resources {ident} --tags Key={key},Value={value}"
    )


def emr_network(settings: Any, client: Any | None = None) -> None:
    """``FRUITS_EMR_SUBNET``, when set: in the connection's region, tagged for EMR. Unset,
    EMR picks the default VPC: nothing to check."""
    subnet = settings.emr.subnet
    if not subnet:
        return
    client = client or ec2_client(settings.aws_conn_id)
    setting = "FRUITS_EMR_SUBNET"
    described = check_subnet(client, subnet, setting, settings.aws_conn_id)
    if described is not None:
        check_emr_subnet_tag(described, setting, client.meta.region_name)


def ec2_network(settings: Any, client: Any | None = None) -> None:
    """``FRUITS_EC2_SUBNET`` and ``FRUITS_EC2_SECURITY_GROUP``, when set: in the
    connection's region, and the group in the subnet's VPC."""
    ec2 = settings.ec2
    if not ec2.subnet and not ec2.security_group:
        return
    client = client or ec2_client(settings.aws_conn_id)
    vpc = None
    if ec2.subnet:
        described = check_subnet(client, ec2.subnet, "FRUITS_EC2_SUBNET", settings.aws_conn_id)
        vpc = (described or {}).get("VpcId")
    if ec2.security_group:
        check_security_group(
            client, ec2.security_group, "FRUITS_EC2_SECURITY_GROUP", settings.aws_conn_id, vpc
        )


def executor_names(value: str) -> list[str]:
    """The executors' class names in ``[core] executor``: a comma list, entries maybe
    ``alias:module.path.Class``, per team ``team=...;...`` (Airflow 3), the default first."""
    teams = [t.strip() for t in value.split(";") if t.strip()]
    teams.sort(key=lambda t: "=" in t and not t.startswith("="))  # the global team's first
    names = []
    for team in teams:
        for entry in team.split("=", 1)[-1].split(","):
            if entry := entry.strip():
                names.append(entry.split(":")[-1].rsplit(".", 1)[-1])
    return names


def configured_executor() -> str:
    from airflow.configuration import conf

    return conf.get("core", "executor")


def single_host(executor: str | None = None) -> None:
    """The local backend's cluster, its scratch folder and its sensor live on the worker
    that ran ``create_job_flow``: a distributed executor may put the next task elsewhere.
    The default (first) executor runs this DAG's tasks; none of them names another."""
    value = configured_executor() if executor is None else executor
    names = executor_names(value) or ["LocalExecutor"]
    if names[0] in SINGLE_HOST_EXECUTORS:
        return
    raise PreflightError(
        f"FRUITS_COMPUTE=local cannot run under {names[0]} (Airflow's [core] executor = "
        f"{value!r}): the local backend's Spark cluster, its scratch folder and the sensor "
        "that watches it must share one host, and a distributed executor may run them on "
        "different workers. Set FRUITS_COMPUTE=emr or ec2, or run Airflow with the "
        "LocalExecutor"
    )


def s3_client(aws_conn_id: str) -> Any:
    """boto3's S3 client of the Airflow connection (its region and endpoint)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3").conn


def staged_wheels(settings: Any, kind: str, client: Any | None = None) -> None:
    """The wheels ``kind`` (``emr``, ``ec2``) nodes install offline are staged for the
    run's requirements hash and the nodes' architecture (their ``index.json``, written
    last by ``make stage-wheels``): else the run fails now, naming the command, not as a
    bootstrap failure minutes into a cluster."""
    from botocore.exceptions import ClientError

    from fruits.storage.wheels import node_wheels, stage_command, staged_manifest

    arch = getattr(settings, kind).arch
    wheels = node_wheels(kind, arch, settings.jobs_dir)
    client = client or s3_client(settings.aws_conn_id)
    where = wheels.uri(settings.bucket)
    try:
        manifest = staged_manifest(client, settings.bucket, wheels)
    except ClientError as exc:
        if error_code(exc) in DENIED:
            print(
                f"preflight: cannot check the staged wheels at {where} ({error_code(exc)}): skipped"
            )
            return
        if error_code(exc) != "NoSuchBucket":
            raise
        manifest = None
    if manifest is not None and sorted(manifest.get("requirements", [])) == sorted(wheels.lines):
        return  # (the folder's name is the hash of the same pins: a reordered file finds it)
    raise PreflightError(
        f"the {kind} nodes' wheels ({arch}) are not staged at {where}: the nodes install "
        f"offline, from the bucket only. Stage them once from a machine that reaches the "
        f"package index: {stage_command(settings.bucket)} (docs/deploy-aws.md)"
    )


def converted_model(settings: Any, run: dict, client: Any | None = None) -> str:
    """The URI of the converted model a cloud run's nodes load (``featurize --model-file``;
    they have no TensorFlow to convert one): made once by ``make stage-weights``
    (:mod:`fruits.storage.converted_models`). PreflightError naming that command when the
    bucket lacks it for the run's model, weights and image size."""
    from botocore.exceptions import ClientError

    from fruits.settings import constraints_file
    from fruits.storage import converted_models
    from fruits.storage.weights import weights_uri

    bucket, model, size = settings.bucket, run["model"], int(run["image_size"])
    precision = run.get("precision", "fp32")
    weights = run["weights"]
    read = weights_uri(bucket, model) if weights == "imagenet" else weights
    client = client or s3_client(settings.aws_conn_id)
    try:
        found = converted_models.find(
            client, bucket, model=model, image_size=size, weights=read,
            constraints=constraints_file(settings.jobs_dir), precision=precision,
        )  # fmt: skip
    except ClientError as exc:
        raise PreflightError(
            f"cannot look for the converted model in s3://{bucket}/: {exc}"
        ) from None
    if found.found and found.uri:
        return found.uri
    where = f"at {found.uri}" if found.uri else f"in s3://{bucket}/models/ for {read}"
    raise PreflightError(
        f"no converted model for {model}@{size}{'' if precision == 'fp32' else ' ' + precision} "
        f"with weights {weights} {where}: the "
        f"cloud nodes run a model converted once, never TensorFlow. Make it "
        f"where TensorFlow is (the dev install, `make venv`): "
        f"`{converted_models.stage_command(bucket, model, size, weights, precision)}`"
    )
