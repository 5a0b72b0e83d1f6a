"""The ``local`` backend's operators, around :mod:`.cluster` (the cluster's life cycle; it
says why the cluster lives where it does) and :mod:`.steps` (the steps). Inputs are staged
from S3 to a scratch folder and the outputs uploaded to the run's staging prefix, since
local Spark has no s3a connector here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
        return add_steps(
            load_settings().scratch,
            self.cluster_id,
            list(self.steps),
            lambda uri, path: stage_down(hook, uri, path),
        )


class LocalStepsSensor(StepFilesSensor):
    """Watches the steps' state files; a failed step fails the task with its stderr. Once
    the last step completed, uploads the outputs to the run's staging prefix in S3."""

    def __init__(self, *, aws_conn_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    def poke(self, context: Any) -> PokeReturnValue | bool:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fruits.clusters.local.cluster import ClusterError
        from fruits.clusters.local.steps import StepFailed, check_steps, upload_outputs

        scratch = load_settings().scratch
        try:
            states = check_steps(scratch, self.cluster_id, self.step_ids)
            self.mirror_progress(scratch)
            if states is None:
                watch_progress(self)
                return False
            uploaded = upload_outputs(scratch, self.cluster_id, S3Hook(self.aws_conn_id))
        except (StepFailed, ClusterError) as exc:
            raise AirflowFailException(str(exc)) from None  # a retry cannot fix these
        steps = {sid: state["state"] for sid, state in states.items()}
        return PokeReturnValue(is_done=True, xcom_value={"steps": steps, **uploaded})

    def mirror_progress(self, scratch: Any) -> None:
        """The jobs wrote their progress to the cluster's scratch copy of the bucket:
        copy it to S3, where every backend's sensor reads it."""
        if not self.progress_uri:
            return
        from pathlib import Path

        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fruits.clusters.common.spark_steps import local_path
        from fruits.clusters.local.cluster import read_cluster
        from fruits.progress import mirror_local

        folder = Path(read_cluster(scratch, self.cluster_id)["dir"]) / "s3"
        mirror_local(S3Hook(self.aws_conn_id), local_path(self.progress_uri, folder),
                     self.progress_uri)  # fmt: skip

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
