"""``create_job_flow`` of the ``ec2`` backend: launch the primary, then the workers
(whose user data names the primary's private IP), and return the moment the instances
exist. Waiting for the cluster to be ready is the next task's job
(:mod:`.ready_sensor`): no Airflow worker slot is held while the nodes boot.

Each execution is an *attempt* (:mod:`.attempt`): its nodes report under a log prefix of
their own (pushed as the XCom ``log_prefix``), its instances carry its name as a tag,
and its ``RunInstances`` calls carry a ``ClientToken`` (a retried call cannot launch a
second cluster). Whatever happens after the first launch, ``remove_cluster`` finds the
instances by the cluster's tag; ``on_kill`` terminates everything launched so far."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.amazon.aws.operators.ec2 import EC2CreateInstanceOperator

from fruits.clusters.ec2.attempt import attempt_prefix, client_token, new_attempt
from fruits.clusters.ec2.request import run_instances_request


class Ec2LaunchClusterOperator(EC2CreateInstanceOperator):
    """Launch the primary (one on-demand instance), then the workers (``MinCount=1``,
    ``MaxCount=N``: the cluster starts at a quorum, :func:`fruits.clusters.common.
    standalone.quorum`); return the instance ids, primary first. The attempt's log
    prefix and primary go to the XComs ``log_prefix`` and ``primary`` as soon as the
    primary exists.

    The provider's ``RunInstances`` is called through its ``EC2Hook`` (``self.hook``),
    once per role; on a failure after a launch the instances stay for ``remove_cluster``,
    which runs after any failure here and terminates by the cluster's tag."""

    template_fields: Sequence[str] = (*EC2CreateInstanceOperator.template_fields, "cluster")

    def __init__(self, *, cluster: Any, **kwargs: Any):
        super().__init__(image_id="", wait_for_completion=False, **kwargs)
        self.cluster = cluster
        self.launched: list[str] = []

    def execute(self, context: Any) -> list[str]:
        from fruits.clusters.ec2.user_data import render_user_data

        cluster = self.cluster
        ti = context["ti"]
        try_number = int(getattr(ti, "try_number", 1) or 1)
        attempt = new_attempt(try_number)
        log_prefix = attempt_prefix(cluster["log_prefix"], attempt)
        self.image_id = cluster["image_id"]
        values = {**cluster["user_data"], "log_prefix": log_prefix,
                  "region": self.hook.conn_region_name}  # fmt: skip

        def request(role: str, master_host: str) -> dict[str, Any]:
            return run_instances_request(
                cluster, role, attempt=attempt,
                client_token=client_token(context["run_id"], cluster["cluster_id"],
                                          try_number, role),
                user_data=render_user_data({**values, "role": role, "master_host": master_host}),
            )  # fmt: skip

        self.log.info("cluster %s, attempt %s: launching the primary; its nodes report "
                      "under %s", cluster["cluster_id"], attempt, log_prefix)  # fmt: skip
        (primary,) = self.run(request("primary", ""))
        ti.xcom_push(key="log_prefix", value=log_prefix)
        ti.xcom_push(key="primary", value=primary["InstanceId"])
        address = primary.get("PrivateIpAddress") or self.address(primary["InstanceId"])
        workers = int(cluster["worker_count"])
        self.log.info("cluster %s: up to %d workers joining %s", cluster["cluster_id"],
                      workers, address)  # fmt: skip
        launched = self.run(request("worker", address))
        if len(launched) < workers:
            self.log.warning("cluster %s: EC2 granted %d of %d workers", cluster["cluster_id"],
                             len(launched), workers)  # fmt: skip
        self.log.info("cluster %s launched: %s", cluster["cluster_id"], self.launched)
        return list(self.launched)

    def run(self, request: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One ``RunInstances`` call; what it launched is known to ``on_kill`` at once."""
        found = self.hook.conn.run_instances(**request)["Instances"]
        self.launched += [i["InstanceId"] for i in found]
        for inst in found:
            self.log.info("launched %s (%s)", inst["InstanceId"], inst.get("InstanceType"))
        return found

    def address(self, instance_id: str) -> str:
        from fruits.clusters.ec2.instances import instances

        (inst,) = instances(self.hook.conn.describe_instances(InstanceIds=[instance_id]))
        return inst["PrivateIpAddress"]

    def on_kill(self) -> None:
        """Terminate everything this attempt launched so far (primary and workers)."""
        if self.launched:
            self.log.info("on_kill: terminating %s", ", ".join(self.launched))
            self.hook.conn.terminate_instances(InstanceIds=list(self.launched))
