"""The end of ``ec2`` clusters: ``remove_cluster`` terminates a run's instances, and
``clear_leftovers`` those of runs killed before their teardown. Both find instances by
their tags as well, so nothing this pipeline launched is left billing."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.operators.ec2 import EC2TerminateInstanceOperator
from airflow.sdk.exceptions import AirflowException

from fruits.clusters.common.step_sensor import AllDoneTeardown
from fruits.clusters.ec2.instances import (
    BUCKET_TAG,
    CLUSTER_TAG,
    LIVE,
    PROJECT_TAG,
    instances,
    tags,
)
from fruits.settings import Settings

TERMINATE_POLL, TERMINATE_POLLS = 5, 120  # seconds between looks, and how many: 10 min
NOT_FOUND = "InvalidInstanceID.NotFound"


def live_instances(conn: Any, cluster_id: str) -> list[str]:
    """The ids of the cluster's instances that are not ended yet, every attempt's: found
    by the cluster's tag (``describe_instances`` with a tag filter: no id can be
    unknown, so no NotFound)."""
    found = conn.describe_instances(
        Filters=[
            {"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster_id]},
            {"Name": "instance-state-name", "Values": [*LIVE, "shutting-down"]},
        ]
    )
    return sorted(i["InstanceId"] for i in instances(found))


def terminate(conn: Any, instance_ids: list[str]) -> None:
    """``terminate_instances``; an instance that is already gone (NotFound, as a late
    teardown may meet) is not an error: the others are terminated one by one."""
    from botocore.exceptions import ClientError

    try:
        conn.terminate_instances(InstanceIds=instance_ids)
        return
    except ClientError as exc:
        if exc.response["Error"]["Code"] != NOT_FOUND:
            raise
    for instance_id in instance_ids:
        try:
            conn.terminate_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != NOT_FOUND:
                raise


class Ec2TerminateClusterOperator(AllDoneTeardown, EC2TerminateInstanceOperator):
    """Terminate every instance tagged with the run's cluster id (all attempts', whatever
    ``create_job_flow`` managed to return), and wait until none is left running.

    Its trigger rule stays ``all_done`` when the DAG makes it the teardown
    (:meth:`as_teardown`): it runs even when ``create_job_flow`` failed after launching,
    which ``all_done_setup_success`` would skip. A teardown does not decide the run's
    state, so a failed run stays failed; with no plan (the run failed before planning
    a cluster) or no instance tagged, it does nothing."""

    template_fields: Sequence[str] = (*EC2TerminateInstanceOperator.template_fields, "cluster")

    def __init__(self, *, cluster: Any, **kwargs: Any):
        kwargs.setdefault("poll_interval", TERMINATE_POLL)
        kwargs.setdefault("max_attempts", TERMINATE_POLLS)
        super().__init__(instance_ids=[], wait_for_completion=True, **kwargs)
        self.cluster = cluster

    def execute(self, context: Any) -> list[str]:
        if not self.cluster:
            self.log.info("no cluster was planned: nothing to terminate")
            return []
        cluster_id = self.cluster["cluster_id"]
        conn = self.hook.conn
        self.instance_ids = live_instances(conn, cluster_id)
        if not self.instance_ids:
            self.log.info("cluster %s: no instance left to terminate", cluster_id)
            return []
        self.log.info("cluster %s: terminating %s", cluster_id, self.instance_ids)
        terminate(conn, self.instance_ids)
        for _ in range(self.max_attempts):
            left = [i for i in live_instances(conn, cluster_id) if i in self.instance_ids]
            if not left:
                break
            time.sleep(self.poll_interval)
        else:
            raise AirflowException(f"cluster {cluster_id}: still not terminated: {left}")
        self.log.info("cluster %s terminated: %s", cluster_id, self.instance_ids)
        return self.instance_ids


def clear_leftovers(settings: Settings) -> dict[str, list[str]]:
    """Terminate the instances of clusters that runs killed before their teardown left
    (cluster id -> instance ids). Called by a run that holds the cluster slot and has not
    launched yet, so every live instance of this pipeline's bucket is a leftover; the
    nodes' shutdown timer would end them too, but later."""
    from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

    hook = EC2Hook(aws_conn_id=settings.aws_conn_id, api_type="client_type")
    found = hook.conn.describe_instances(
        Filters=[
            {"Name": f"tag:{PROJECT_TAG['Key']}", "Values": [PROJECT_TAG["Value"]]},
            {"Name": f"tag:{BUCKET_TAG}", "Values": [settings.bucket]},
            {"Name": "instance-state-name", "Values": list(LIVE)},
        ]
    )
    leftovers: dict[str, list[str]] = {}
    for inst in instances(found):
        leftovers.setdefault(tags(inst).get(CLUSTER_TAG, "?"), []).append(inst["InstanceId"])
    ids = sorted(i for group in leftovers.values() for i in group)
    if ids:
        terminate(hook.conn, ids)
    return {cluster: sorted(group) for cluster, group in leftovers.items()}
