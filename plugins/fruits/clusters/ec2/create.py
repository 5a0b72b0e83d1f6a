"""``create_job_flow`` of the ``ec2`` backend: launch the primary, then the workers
(whose user data names the primary's private IP), and wait until the primary reports
the cluster ready under the cluster's log prefix."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.amazon.aws.operators.ec2 import EC2CreateInstanceOperator
from airflow.sdk.exceptions import AirflowFailException

from fruits.clusters.ec2.instances import instances, nodes_gone
from fruits.storage.s3sync import read_json, split_uri

READY_POLL = 15  # seconds between two looks for ready.json (or a node's failure)


class Ec2CreateClusterOperator(EC2CreateInstanceOperator):
    """Launch the primary, then the workers, wait until the primary says the cluster is
    ready; return the instance ids, primary first. Terminates what it launched if
    anything fails (the teardown never sees ids from a failed task)."""

    template_fields: Sequence[str] = (*EC2CreateInstanceOperator.template_fields, "cluster")

    def __init__(self, *, cluster: Any, ready_poll: float = READY_POLL, **kwargs: Any):
        super().__init__(image_id="", wait_for_completion=True, **kwargs)
        self.cluster = cluster
        self.ready_poll = ready_poll

    def execute(self, context: Any) -> list[str]:
        from fruits.clusters.ec2.user_data import render_user_data

        cluster = self.cluster
        self.image_id = cluster["image_id"]
        values = {**cluster["user_data"], "region": self.hook.conn_region_name}
        launched: list[str] = []
        try:
            self.log.info("cluster %s: launching the primary", cluster["cluster_id"])
            launched += self.launch(
                context, cluster["primary"], 1,
                render_user_data({**values, "role": "primary", "master_host": ""}),
            )  # fmt: skip
            primary = self.describe(launched[:1])[0]
            address = primary["PrivateIpAddress"]
            self.log.info("cluster %s: %d workers joining %s", cluster["cluster_id"],
                          cluster["worker_count"], address)  # fmt: skip
            launched += self.launch(
                context, cluster["workers"], int(cluster["worker_count"]),
                render_user_data({**values, "role": "worker", "master_host": address}),
            )  # fmt: skip
            self._on_kill_instance_ids = list(launched)
            ready = self.wait_until_ready(cluster, launched)
        except BaseException as exc:
            if launched:
                self.log.error("cluster %s failed (%s): terminating %s",
                               cluster["cluster_id"], exc, launched)  # fmt: skip
                self.hook.conn.terminate_instances(InstanceIds=launched)
            raise
        self.log.info("cluster %s ready: %s", cluster["cluster_id"], ready)
        return launched

    def launch(self, context: Any, config: Mapping, count: int, user_data: str) -> list[str]:
        self.config = {**config, "UserData": user_data}
        self.min_count = self.max_count = count
        return list(super().execute(context))

    def describe(self, instance_ids: list[str]) -> list[dict[str, Any]]:
        return instances(self.hook.conn.describe_instances(InstanceIds=instance_ids))

    def wait_until_ready(self, cluster: Mapping[str, Any], instance_ids: list[str]) -> dict:
        """``ready.json`` once the primary wrote it; fails at once on a node's
        ``failed/`` report or a node that is gone, and after ``ready_timeout``."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        s3 = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        log_prefix = cluster["log_prefix"]
        deadline = time.monotonic() + float(cluster["ready_timeout"])
        while True:
            ready = read_json(s3, log_prefix + "ready.json")
            if ready is not None:
                return ready
            why = node_failure(s3, log_prefix) or nodes_gone(self.describe(instance_ids))
            if why:
                raise AirflowFailException(f"cluster {cluster['cluster_id']} did not start: {why}")
            if time.monotonic() > deadline:
                raise AirflowFailException(
                    f"cluster {cluster['cluster_id']} not ready within "
                    f"{cluster['ready_timeout']}s: no {log_prefix}ready.json. The nodes' "
                    f"console output says why: aws ec2 get-console-output --instance-id "
                    f"{instance_ids[0]}"
                )
            time.sleep(self.ready_poll)


def node_failure(s3: Any, log_prefix: str) -> str | None:
    """What a node's user data reported under ``failed/`` before giving up, if anything."""
    bucket, prefix = split_uri(log_prefix + "failed/")
    keys = s3.list_keys(bucket_name=bucket, prefix=prefix) or []
    for key in sorted(keys):
        report = json.loads(s3.read_key(key, bucket_name=bucket))
        node = report.get("instance_id") or report.get("role", "?")
        return (
            f"the {report.get('role', '?')} node ({node}) failed: {report.get('error')}\n"
            f"--- s3://{bucket}/{key} log tail ---\n{report.get('log_tail', '')}"
        )
    return None
