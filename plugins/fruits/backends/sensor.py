"""The step sensor the ``local`` and ``ec2`` backends share: a timeout sized by the batch.

EMR's sensor (``fruits.emr.StepSensor``) is the provider's; these watch steps whose
states the cluster writes as files (local folder, or S3 under the cluster's log prefix).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout


class StepsSensor(BaseSensorOperator):
    """Waits for the last of ``step_ids``; ``timeout_seconds`` (templated: it comes from
    the batch's image count) replaces the sensor's timeout at run time. On a timeout,
    :meth:`late_report` says which step was running and shows its stderr."""

    template_fields: Sequence[str] = ("job_flow_id", "step_ids", "timeout_seconds")

    def __init__(
        self, *, job_flow_id: Any, step_ids: Any, timeout_seconds: Any = None, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.job_flow_id = job_flow_id
        self.step_ids = step_ids
        self.timeout_seconds = timeout_seconds

    def execute(self, context: Any) -> Any:
        if not self.step_ids:
            raise AirflowFailException("no step ids to wait for")
        self.step_ids = list(self.step_ids)
        if self.timeout_seconds not in (None, ""):
            self.timeout = float(self.timeout_seconds)
        self.log.info(
            "Waiting up to %.0fs for steps %s on %s", self.timeout, self.step_ids, self.job_flow_id
        )
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            try:
                report = self.late_report()
            except Exception as detail:  # never hide the timeout behind ours
                report = f"(no details: {detail})"
            raise AirflowSensorTimeout(f"{exc}\n{report}") from None

    def late_report(self) -> str:
        raise NotImplementedError
