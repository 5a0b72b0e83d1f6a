"""What every backend's ``wait_for_step`` sensor shares (its arguments come from
:func:`fruits.clusters.step_sensor_args`): its timeout sized by the batch
(:func:`start_waiting`), the steps' live progress (:func:`watch_progress`), and, for the
backends whose steps write their states as files (``local``: a folder, ``ec2``: the
cluster's log prefix in S3), the sensor itself (:class:`StepFilesSensor`). EMR's is the provider's
(:class:`fruits.clusters.emr.step_sensor.EmrStepsSensor`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from fruits.clusters.common.step_reports import late_report


def start_waiting(sensor: Any) -> list[str]:
    """The step ids ``sensor`` waits for (AirflowFailException if there are none); its
    ``timeout_seconds`` (templated: it comes from the batch's image count) replaces its
    timeout, since a sensor's own timeout is fixed when the DAG is parsed."""
    if not sensor.step_ids:
        raise AirflowFailException("no step ids to wait for")
    step_ids = list(sensor.step_ids)
    if sensor.timeout_seconds not in (None, ""):
        sensor.timeout = float(sensor.timeout_seconds)
    sensor.log.info(
        "Waiting up to %.0fs for steps %s on %s", sensor.timeout, step_ids, sensor.cluster_id
    )
    return step_ids


def watch_progress(sensor: Any, hook: Any = None) -> None:
    """Log the steps' live progress (:mod:`fruits.progress`) read from S3 at the sensor's
    ``progress_uri`` (through ``hook``, a new S3Hook if none); a stalled step fails the
    task (AirflowFailException: a retry cannot unstick it; the teardown still removes the
    cluster)."""
    uri = getattr(sensor, "progress_uri", None)
    if not uri:
        return
    from fruits.progress import report

    if hook is None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id=sensor.aws_conn_id)
    stalled = report(sensor.log, hook, uri, float(sensor.stall_seconds or 0))
    if stalled:
        sensor.log.error("%s", stalled)
        raise AirflowFailException(stalled)


class StepFilesSensor(BaseSensorOperator):
    """Waits for the last of ``step_ids``, whose states :meth:`step_states` reads. On a
    timeout, the running step's :meth:`step_report` (its state and stderr) comes with it."""

    template_fields: Sequence[str] = ("cluster_id", "step_ids", "timeout_seconds", "progress_uri")

    def __init__(
        self,
        *,
        cluster_id: Any,
        step_ids: Any,
        timeout_seconds: Any = None,
        progress_uri: Any = None,
        stall_seconds: float = 0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.cluster_id = cluster_id
        self.step_ids = step_ids
        self.timeout_seconds = timeout_seconds
        self.progress_uri = progress_uri  # where the steps write progress (fruits.progress)
        self.stall_seconds = stall_seconds

    def execute(self, context: Any) -> Any:
        self.step_ids = start_waiting(self)
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            try:
                report = late_report(
                    self.step_ids, self.step_states(), self.timeout, self.step_report
                )
            except Exception as detail:  # never hide the timeout behind ours
                report = f"(no details: {detail})"
            raise AirflowSensorTimeout(f"{exc}\n{report}") from None

    def step_states(self) -> dict[str, dict]:
        """Step id -> its state (``state.json``: state, returncode, reason)."""
        raise NotImplementedError

    def step_report(self, step_id: str, state: Mapping[str, Any]) -> str:
        """What a failed or late step says: its headline and the tail of its stderr."""
        raise NotImplementedError


def poke_explained(sensor: Any, poke: Any) -> bool:
    """``poke()`` of a provider's sensor; the failure it raises (a failed, cancelled or
    interrupted step) becomes AirflowFailException -- retrying the sensor cannot make
    the step succeed -- with ``sensor.explain_failure()`` (the step's state and stderr)."""
    from airflow.sdk.exceptions import AirflowException

    try:
        return poke()
    except AirflowException as exc:
        if isinstance(exc, AirflowFailException):
            raise
        try:
            explanation = sensor.explain_failure()
        except Exception as detail:  # never hide the step's failure behind ours
            sensor.log.warning("could not fetch the failed step's details: %s", detail)
            explanation = f"(no details: {detail})"
        raise AirflowFailException(f"{exc}\n{explanation}") from exc


class AllDoneTeardown:
    """A teardown that keeps the trigger rule ``all_done`` (:meth:`as_teardown` would make
    it ``all_done_setup_success``): it runs even when the setup failed after creating
    something, which it then finds by the run's tags or names. A teardown does not decide
    the run's state, so a failed run stays failed."""

    def as_teardown(self, **kwargs: Any) -> Any:
        from airflow.sdk import TriggerRule

        super().as_teardown(**kwargs)  # type: ignore[misc]
        self.trigger_rule = TriggerRule.ALL_DONE
        return self
