"""``wait_for_step`` of the ``emr`` backend: the provider's ``EmrStepSensor`` watching the
last of the run's steps, with a timeout sized for the batch, that shows a failed step's
stderr (EMR copies it to ``<LogUri>/<cluster>/steps/<step>/stderr.gz``) in the task log,
and fails at once, with EMR's reason, when the cluster itself is gone (a failed
bootstrap, an instance shortage, a cluster terminated by hand).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.sdk.exceptions import AirflowFailException

from fruits.clusters.common.step_reports import s3_log_tail
from fruits.clusters.common.step_runner import FAILED
from fruits.clusters.common.step_sensor import poke_explained, start_waiting, watch_progress
from fruits.storage.s3sync import split_uri

CLUSTER_GONE = ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS")


def step_log_key(log_uri: str, cluster_id: str, step_id: str, name: str = "stderr.gz") -> tuple:
    """(bucket, key) of a step's log file under the cluster's LogUri (s3:// or s3n://)."""
    bucket, prefix = split_uri(log_uri)
    prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    return bucket, f"{prefix}{cluster_id}/steps/{step_id}/{name}"


class EmrStepsSensor(EmrStepSensor):
    """``EmrStepSensor`` on the last of ``step_ids``; on failure, the failed step's stderr.

    ``timeout_seconds`` (templated) replaces the sensor's timeout at run time, so it can
    come from the batch (its image count). A failed, cancelled or interrupted step
    raises ``AirflowFailException``: retrying the sensor cannot make the step succeed.
    """

    template_fields: Sequence[str] = (
        *EmrStepSensor.template_fields, "step_ids", "timeout_seconds", "progress_uri",
    )  # fmt: skip

    def __init__(
        self,
        *,
        cluster_id: Any,
        step_ids: Any,
        timeout_seconds: Any = None,
        log_wait: float = 300,
        progress_uri: Any = None,
        stall_seconds: float = 0,
        **kwargs: Any,
    ):
        super().__init__(job_flow_id=cluster_id, step_id="", **kwargs)
        self.cluster_id = cluster_id
        self.step_ids = step_ids
        self.timeout_seconds = timeout_seconds
        self.log_wait = log_wait
        self.progress_uri = progress_uri  # where the steps write progress (fruits.progress)
        self.stall_seconds = stall_seconds

    def execute(self, context: Any) -> None:
        self.step_id = start_waiting(self)[-1]
        super().execute(context)

    def poke(self, context: Any) -> bool:
        done = poke_explained(self, lambda: super(EmrStepsSensor, self).poke(context))
        if not done:
            gone = self.cluster_gone()
            if gone:  # its steps will never finish: do not wait for the timeout
                raise AirflowFailException(f"{gone}; steps {list(self.step_ids)} cannot finish")
            watch_progress(self)
        return done

    def cluster_gone(self) -> str | None:
        """``cluster <id> is <state>: <reason>`` if the cluster is ending or ended."""
        cluster = self.hook.conn.describe_cluster(ClusterId=self.job_flow_id)["Cluster"]
        status = cluster.get("Status", {})
        state = status.get("State", "?")
        if state not in CLUSTER_GONE:
            return None
        reason = status.get("StateChangeReason") or {}
        why = ": ".join(str(reason[k]) for k in ("Code", "Message") if reason.get(k))
        return f"cluster {self.job_flow_id} is {state}" + (f": {why}" if why else "")

    def explain_failure(self) -> str:
        """Which step failed and the tail of its stderr (also logged at ERROR)."""
        emr = self.hook.conn
        steps = emr.list_steps(ClusterId=self.job_flow_id, StepIds=list(self.step_ids))["Steps"]
        by_id = {s["Id"]: s for s in steps}
        failed = [sid for sid in self.step_ids if by_id.get(sid, {}).get("Status", {}).get(
            "State") == FAILED]  # fmt: skip
        step_id = failed[0] if failed else self.step_id
        step = by_id.get(step_id, {})
        status = step.get("Status", {})
        lines = [f"step {step_id} ({step.get('Name', '?')}) is {status.get('State', '?')}"]
        details = status.get("FailureDetails") or {}
        if details:
            lines.append(f"EMR says: {details.get('Reason')}: {details.get('Message')}")
        gone = self.cluster_gone()
        if gone:
            lines.append(gone)
        log_uri = emr.describe_cluster(ClusterId=self.job_flow_id)["Cluster"].get("LogUri")
        if status.get("State") != FAILED:
            lines.append("the step did not fail by itself: no stderr of its own to show")
        elif not log_uri:
            lines.append("the cluster has no LogUri: no step logs to show")
        else:
            stderr = self.fetch_step_log(log_uri, step_id)
            lines.append(stderr)
        message = "\n".join(lines)
        self.log.error("%s", message)
        return message

    def fetch_step_log(self, log_uri: str, step_id: str) -> str:
        """The tail of ``stderr.gz``; EMR uploads it a few minutes after the step ends."""
        bucket, key = step_log_key(log_uri, self.job_flow_id, step_id)
        s3 = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        return s3_log_tail(s3, bucket, key, self.log_wait)
