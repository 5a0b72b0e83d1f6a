"""``wait_for_cluster`` of the ``ec2`` backend: a sensor (reschedule mode whenever the
looks are a minute apart) until the primary of *this* attempt reports the cluster
ready under the attempt's log prefix. It fails at once when the primary reports a
failure or is gone, or when too many workers are lost for a quorum ever to join."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from fruits.clusters.common.standalone import quorum
from fruits.clusters.ec2.instances import GONE, ROLE_TAG, instances, nodes_gone, tags
from fruits.storage.s3sync import read_json, split_uri

WAIT_FOR_CLUSTER_ID = "wait_for_cluster"


def ready_for(ready: Mapping[str, Any] | None, primary: str) -> bool:
    """Whether ``ready.json`` was written by ``primary`` (this attempt's primary), not
    by a node of another attempt that reported to the same place."""
    return bool(ready) and ready.get("instance_id") == primary


def failure_reports(s3: Any, log_prefix: str) -> list[dict[str, Any]]:
    """The reports the nodes' user data left under ``failed/`` before giving up."""
    bucket, prefix = split_uri(log_prefix + "failed/")
    found = []
    for key in sorted(s3.list_keys(bucket_name=bucket, prefix=prefix) or []):
        report = json.loads(s3.read_key(key, bucket_name=bucket))
        found.append({**report, "uri": f"s3://{bucket}/{key}"})
    return found


def describe_failure(report: Mapping[str, Any]) -> str:
    node = report.get("instance_id") or report.get("role", "?")
    return (
        f"the {report.get('role', '?')} node ({node}) failed: {report.get('error')}\n"
        f"--- {report['uri']} log tail ---\n{report.get('log_tail', '')}"
    )


def why_not_ready(
    found: list[Mapping[str, Any]], reports: list[Mapping[str, Any]], primary: str, workers: int
) -> str | None:
    """Why this attempt's cluster can never become ready, if it cannot: its primary
    failed or is gone, or fewer workers than a quorum are left (gone or failed)."""
    for report in reports:
        if report.get("role") == "primary":
            return describe_failure(report)
    by_id = {inst["InstanceId"]: inst for inst in found}
    if primary in by_id:
        gone = nodes_gone([by_id[primary]])
        if gone:
            return f"the primary {gone}"
    lost = {
        inst["InstanceId"]
        for inst in found
        if tags(inst).get(ROLE_TAG) == "worker" and inst.get("State", {}).get("Name") in GONE
    } | {r.get("instance_id") for r in reports if r.get("role") == "worker"}
    launched = [i for i in found if tags(i).get(ROLE_TAG) == "worker"]
    left = len(launched) - len(lost)  # EC2 may have granted fewer than asked (MinCount=1)
    if left < quorum(workers):
        details = [describe_failure(r) for r in reports] or [
            nodes_gone([inst]) or "" for inst in found if inst["InstanceId"] in lost
        ]
        return (f"{len(lost)} of {len(launched)} workers lost, fewer than the quorum of "
                f"{quorum(workers)} left: " + "; ".join(details))  # fmt: skip
    return None


class Ec2ClusterReadySensor(BaseSensorOperator):
    """Done when ``<attempt log prefix>ready.json`` names this attempt's primary."""

    template_fields: Sequence[str] = ("cluster", "instance_ids", "log_prefix")

    def __init__(
        self, *, cluster: Any, instance_ids: Any, log_prefix: Any, aws_conn_id: str, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.cluster = cluster
        self.instance_ids = instance_ids
        self.log_prefix = log_prefix
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout:
            cluster = self.cluster
            raise AirflowFailException(
                f"cluster {cluster['cluster_id']} not ready within {self.timeout:.0f}s: no "
                f"{self.log_prefix}ready.json from its primary. The nodes' console output "
                f"says why: aws ec2 get-console-output --instance-id {self.instance_ids[0]}"
            ) from None

    def poke(self, context: Any) -> Any:
        from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk import PokeReturnValue

        s3 = S3Hook(aws_conn_id=self.aws_conn_id)
        primary, cluster = self.instance_ids[0], self.cluster
        ready = read_json(s3, self.log_prefix + "ready.json")
        if ready_for(ready, primary):
            self.log.info("cluster %s ready: %s", cluster["cluster_id"], ready)
            return PokeReturnValue(is_done=True, xcom_value=ready)
        if ready is not None:
            self.log.warning("%sready.json is not from this attempt's primary %s: %s",
                             self.log_prefix, primary, ready)  # fmt: skip
        from botocore.exceptions import ClientError

        hook = EC2Hook(aws_conn_id=self.aws_conn_id, api_type="client_type")
        try:
            found = instances(hook.conn.describe_instances(InstanceIds=list(self.instance_ids)))
        except ClientError as exc:  # EC2 is eventually consistent: new ids may be unknown
            if exc.response["Error"]["Code"] != "InvalidInstanceID.NotFound":
                raise
            self.log.info("instances not described yet (%s): looking again", exc)
            return False
        why = why_not_ready(found, failure_reports(s3, self.log_prefix), primary,
                            int(cluster["worker_count"]))  # fmt: skip
        if why:
            raise AirflowFailException(f"cluster {cluster['cluster_id']} did not start: {why}")
        return False
