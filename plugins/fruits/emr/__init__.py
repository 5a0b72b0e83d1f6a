"""The ``emr`` backend's pieces that are not plain provider operators.

- :func:`job_flow` renders ``job_flow.json`` (the ``RunJobFlow`` request, a valid JSON
  file whose ``"{{name}}"`` strings are placeholders) for ``EmrCreateJobFlowOperator``.
- :class:`StepSensor` is the provider's ``EmrStepSensor`` watching the last of the
  run's steps, with a timeout sized for the batch, that shows a failed step's stderr
  (EMR copies it to ``<LogUri>/<cluster>/steps/<step>/stderr.gz``) in the task log,
  and fails at once, with EMR's reason, when the cluster itself is gone (a failed
  bootstrap, an instance shortage, a cluster terminated by hand).
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from fruits.backends.sensor import start_waiting, watch_progress
from fruits.config import Settings
from fruits.s3sync import split_uri
from fruits.step_reports import log_tail

TEMPLATE = Path(__file__).with_name("job_flow.json")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_DROP = object()
CLUSTER_GONE = ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS")


def _render(node: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        out = {k: _render(v, values) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not _DROP}
    if isinstance(node, list):
        return [v for v in (_render(item, values) for item in node) if v is not _DROP]
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:  # "{{x}}" alone takes x's type (numbers, lists); empty drops the key
            value = values[whole.group(1)]
            return _DROP if value in (None, "") else value
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), node)
    return node


def job_flow(settings: Settings, *, name: str, code: Mapping[str, str]) -> dict[str, Any]:
    """The ``RunJobFlow`` request for one run (``code``: URIs from the upload_code task)."""
    emr = settings.emr
    tags = {
        **emr.tags,
        # the Airflow role may only create clusters tagged so (infra/fruits-pipeline.yaml)
        "project": "fruits-pipeline",
        # AmazonEMRServicePolicy_v2 acts only on resources carrying this tag
        "for-use-with-amazon-emr-managed-policies": "true",
    }
    values = {
        "name": name,
        "release_label": emr.release_label,
        "log_uri": emr.log_uri,
        "master_type": emr.master_type,
        "core_type": emr.core_type,
        "core_count": emr.core_count,
        "task_type": emr.task_type,
        "task_spot_count": emr.task_spot_count,
        "subnet": emr.subnet,
        "bootstrap": code["bootstrap"],
        "requirements": code["requirements"],
        "python": emr.python,
        "idle_timeout": emr.idle_timeout,
        "instance_profile": emr.instance_profile,
        "service_role": emr.service_role,
        "tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }
    request = _render(json.loads(TEMPLATE.read_text()), values)
    groups = request["Instances"]["InstanceGroups"]
    request["Instances"]["InstanceGroups"] = [g for g in groups if g["InstanceCount"] > 0]
    return request


def step_log_key(log_uri: str, cluster_id: str, step_id: str, name: str = "stderr.gz") -> tuple:
    """(bucket, key) of a step's log file under the cluster's LogUri (s3:// or s3n://)."""
    bucket, prefix = split_uri(log_uri)
    prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    return bucket, f"{prefix}{cluster_id}/steps/{step_id}/{name}"


class StepSensor(EmrStepSensor):
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
        step_ids: Any,
        timeout_seconds: Any = None,
        log_wait: float = 300,
        progress_uri: Any = None,
        stall_seconds: float = 0,
        **kwargs: Any,
    ):
        super().__init__(step_id="", **kwargs)
        self.step_ids = step_ids
        self.timeout_seconds = timeout_seconds
        self.log_wait = log_wait
        self.progress_uri = progress_uri  # where the steps write progress (fruits.progress)
        self.stall_seconds = stall_seconds

    def execute(self, context: Any) -> None:
        self.step_id = start_waiting(self)[-1]
        super().execute(context)

    def poke(self, context: Any) -> bool:
        try:
            done = super().poke(context)
        except AirflowException as exc:
            if isinstance(exc, AirflowFailException):
                raise
            try:
                explanation = self.explain_failure()
            except Exception as detail:  # never hide the step's failure behind ours
                self.log.warning("could not fetch the failed step's details: %s", detail)
                explanation = f"(no details: {detail})"
            raise AirflowFailException(f"{exc}\n{explanation}") from exc
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
            "State") == "FAILED"]  # fmt: skip
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
        if status.get("State") != "FAILED":
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
        deadline = time.monotonic() + float(self.log_wait)
        while not s3.check_for_key(key, bucket_name=bucket):
            if time.monotonic() >= deadline:
                return f"(no step stderr yet at s3://{bucket}/{key}; EMR uploads it later)"
            time.sleep(min(15.0, max(1.0, float(self.log_wait) / 10)))
        data = s3.get_key(key, bucket_name=bucket).get()["Body"].read()
        try:
            text = gzip.decompress(data).decode("utf-8", errors="replace")
        except OSError:
            text = data.decode("utf-8", errors="replace")
        return f"--- s3://{bucket}/{key} (tail) ---\n{log_tail(text, 60)}"
