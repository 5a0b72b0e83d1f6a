"""The end of ``ec2`` clusters: ``remove_cluster`` terminates a run's instances, and
``clear_leftovers`` those of runs killed before their teardown. Both find instances by
their tags as well, so nothing this pipeline launched is left billing."""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.operators.ec2 import EC2TerminateInstanceOperator

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


class Ec2TerminateClusterOperator(EC2TerminateInstanceOperator):
    """Terminate the cluster's instances: those given, and any other instance carrying
    their cluster id tag that is not ended yet (belt and braces: nothing left billing)."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("poll_interval", TERMINATE_POLL)
        kwargs.setdefault("max_attempts", TERMINATE_POLLS)
        super().__init__(wait_for_completion=True, **kwargs)

    def execute(self, context: Any) -> list[str]:
        given = self.instance_ids or []
        given = [given] if isinstance(given, str) else list(given)
        described = self.hook.conn.describe_instances(InstanceIds=given) if given else None
        clusters = {
            tags(inst)[CLUSTER_TAG]
            for inst in (instances(described) if described else [])
            if CLUSTER_TAG in tags(inst)
        }
        found = self.hook.conn.describe_instances(
            Filters=[
                {"Name": f"tag:{CLUSTER_TAG}", "Values": sorted(clusters)},
                {"Name": "instance-state-name", "Values": list(LIVE)},
            ]
        ) if clusters else {"Reservations": []}  # fmt: skip
        tagged = [i["InstanceId"] for i in instances(found)]
        self.instance_ids = sorted({*given, *tagged})
        if not self.instance_ids:
            self.log.info("no instance left to terminate")
            return []
        super().execute(context)
        self.log.info("cluster %s terminated: %s", ", ".join(sorted(clusters)), self.instance_ids)
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
        hook.conn.terminate_instances(InstanceIds=ids)
    return {cluster: sorted(group) for cluster, group in leftovers.items()}
