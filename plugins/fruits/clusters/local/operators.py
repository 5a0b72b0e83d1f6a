"""The ``local`` backend's operators, around :mod:`.cluster` (the cluster's life cycle; it
says why the cluster lives where it does) and :mod:`.steps` (the steps). Inputs are staged
from S3 to a scratch folder and the outputs uploaded to the run's staging prefix, since
local Spark has no s3a connector here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from fruits.clusters.common.step_sensor import StepFilesSensor, watch_progress
from fruits.settings import load_settings


class LocalCreateClusterOperator(BaseOperator):
    """Start a master and a worker on 127.0.0.1; returns the cluster id."""

    template_fields: Sequence[str] = ("cluster",)

    def __init__(self, *, cluster: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.cluster = cluster

    def execute(self, context: Any) -> str:
        from fruits.clusters.local.cluster import start_cluster

        return start_cluster(
            load_settings().scratch,
            cores=int(self.cluster["cores"]),
            memory=str(self.cluster["memory"]),
            name=self.cluster["Name"],
            labels={"dag_id": self.dag_id, "run_id": context["run_id"]},
        )


class LocalAddStepsOperator(BaseOperator):
    """Stage the inputs from S3 and start the steps, in order; returns the step ids."""

    template_fields: Sequence[str] = ("cluster_id", "steps")

    def __init__(self, *, cluster_id: Any, steps: Any, aws_conn_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.cluster_id = cluster_id
        self.steps = steps
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Any) -> list[str]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fruits.clusters.local.steps import add_steps
        from fruits.storage.s3sync import stage_down

        hook = S3Hook(self.aws_conn_id)
        settings = load_settings()
        return add_steps(
            settings.scratch,
            self.cluster_id,
            list(self.steps),
            lambda uri, path: stage_down(hook, uri, path),
            driver_memory=settings.local_driver_memory,
        )


# How often a poking wait_for_step reads the steps' state files: local files, so a look
# costs milliseconds, and the run learns a step ended within this many seconds instead of
# up to FRUITS_POKE_INTERVAL later. Its looks at S3 keep FRUITS_POKE_INTERVAL.
STEP_CHECK_SECONDS = 1.0


class LocalStepsSensor(StepFilesSensor):
    """Watches the steps' state files; a failed step fails the task with its stderr. Once
    the last step completed, uploads the outputs to the run's staging prefix in S3.

    In ``poke`` mode it reads the state files every :data:`STEP_CHECK_SECONDS` and the
    steps' progress (copied to and read from S3) every ``poke_interval`` as asked
    (``progress_interval``); in ``reschedule`` mode every look does both, ``poke_interval``
    apart, as before: a look seconds apart would race the scheduler (apache/airflow#71172).
    """

    def __init__(
        self,
        *,
        aws_conn_id: str,
        poke_interval: float | timedelta = 60,
        mode: str = "poke",
        **kwargs: Any,
    ):
        asked = self._coerce_poke_interval(poke_interval).total_seconds()
        checks = min(asked, STEP_CHECK_SECONDS) if mode == "poke" else asked
        super().__init__(poke_interval=checks, mode=mode, **kwargs)
        self.aws_conn_id = aws_conn_id
        self.progress_interval = asked
        self._seen: dict[str, str] = {}  # step id -> state last logged
        self._progress_at: float | None = None  # monotonic time of the last look at S3
        self._hook: Any = None

    @property
    def s3_hook(self) -> Any:
        """One S3Hook for all of this task's looks (a new one is a new boto3 client:
        tenths of a second of CPU that the steps' Spark processes would rather have)."""
        if self._hook is None:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            self._hook = S3Hook(self.aws_conn_id)
        return self._hook

    def poke(self, context: Any) -> PokeReturnValue | bool:
        from fruits.clusters.local.cluster import ClusterError
        from fruits.clusters.local.steps import StepFailed, check_steps, upload_outputs

        scratch = load_settings().scratch
        try:
            states = check_steps(scratch, self.cluster_id, self.step_ids, self._seen)
            if states is None:
                if self.progress_due():
                    self.mirror_progress(scratch)
                    watch_progress(self, self.s3_hook)
                return False
            self.mirror_progress(scratch)  # the steps' last report: the run summary's times
            uploaded = upload_outputs(scratch, self.cluster_id, self.s3_hook)
        except (StepFailed, ClusterError) as exc:
            raise AirflowFailException(str(exc)) from None  # a retry cannot fix these
        steps = {sid: state["state"] for sid, state in states.items()}
        return PokeReturnValue(is_done=True, xcom_value={"steps": steps, **uploaded})

    def progress_due(self, now: float | None = None) -> bool:
        """Whether this look also copies and reads the steps' progress in S3: the first
        look, then once every ``progress_interval`` seconds (S3 calls cost more than the
        state files' reads, and the progress moves slower than a step can end)."""
        now = time.monotonic() if now is None else now
        if self._progress_at is not None and now - self._progress_at < self.progress_interval:
            return False
        self._progress_at = now
        return True

    def mirror_progress(self, scratch: Any) -> None:
        """The jobs wrote their progress to the cluster's scratch copy of the bucket:
        copy it to S3, where every backend's sensor reads it."""
        if not self.progress_uri:
            return
        from pathlib import Path

        from fruits.clusters.common.spark_steps import local_path
        from fruits.clusters.local.cluster import read_cluster
        from fruits.progress import mirror_local

        folder = Path(read_cluster(scratch, self.cluster_id)["dir"]) / "s3"
        mirror_local(self.s3_hook, local_path(self.progress_uri, folder), self.progress_uri)

    def step_states(self) -> dict[str, dict]:
        from fruits.clusters.local.steps import read_step_states

        return read_step_states(load_settings().scratch, self.cluster_id, self.step_ids)

    def step_report(self, step_id: str, state: Mapping[str, Any]) -> str:
        from fruits.clusters.local.steps import failure_report

        return failure_report(load_settings().scratch, self.cluster_id, step_id, state)


class LocalTerminateClusterOperator(BaseOperator):
    """End the cluster's processes (exactly those it recorded); safe to run again."""

    template_fields: Sequence[str] = ("cluster_id",)

    def __init__(self, *, cluster_id: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.cluster_id = cluster_id

    def execute(self, context: Any) -> dict[str, str]:
        from fruits.clusters.local.cluster import stop_cluster

        return stop_cluster(load_settings().scratch, self.cluster_id)
