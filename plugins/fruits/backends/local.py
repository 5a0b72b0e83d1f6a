"""The ``local`` backend: a Spark standalone cluster on the Airflow worker, on loopback.

Operators around :mod:`fruits.local_cluster` (the cluster's life cycle; it says why the
cluster lives where it does) and :mod:`fruits.local_steps` (the steps). Inputs are
staged from S3 to a scratch folder and the outputs uploaded to the run's staging
prefix, since local Spark has no s3a connector here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from fruits.backends import ClusterTasks, step_sensor_args
from fruits.backends.sensor import StepsSensor, watch_progress
from fruits.config import Settings, load_settings

REMOTE = False  # the cluster runs where the code and the weights already are


def code_files() -> dict[str, bytes]:
    return {}


def cluster_request(
    settings: Settings, *, name: str, code: Mapping[str, str], run_key: str, timeout: int
) -> dict[str, Any]:
    return {"Name": name, "cores": settings.local_cores, "memory": settings.local_memory}


def clear_leftovers(settings: Settings) -> dict[str, Any]:
    """Stop the clusters whose owner process is gone (runs killed before their teardown)."""
    from fruits.local_cluster import reap_abandoned

    return reap_abandoned(settings.scratch)


class LocalCreateClusterOperator(BaseOperator):
    """Start a master and a worker on 127.0.0.1; returns the cluster id."""

    template_fields: Sequence[str] = ("job_flow",)

    def __init__(self, *, job_flow: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.job_flow = job_flow

    def execute(self, context: Any) -> str:
        from fruits.local_cluster import start_cluster

        return start_cluster(
            load_settings().scratch,
            cores=int(self.job_flow["cores"]),
            memory=str(self.job_flow["memory"]),
            name=self.job_flow["Name"],
            labels={"dag_id": self.dag_id, "run_id": context["run_id"]},
        )


class LocalAddStepsOperator(BaseOperator):
    """Stage the inputs from S3 and start the steps, in order; returns the step ids."""

    template_fields: Sequence[str] = ("job_flow_id", "steps")

    def __init__(self, *, job_flow_id: Any, steps: Any, aws_conn_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.job_flow_id = job_flow_id
        self.steps = steps
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Any) -> list[str]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fruits.local_steps import add_steps
        from fruits.s3sync import stage_down

        hook = S3Hook(self.aws_conn_id)
        return add_steps(
            load_settings().scratch,
            self.job_flow_id,
            list(self.steps),
            lambda uri, path: stage_down(hook, uri, path),
        )


class LocalStepSensor(StepsSensor):
    """Watches the steps' state files; a failed step fails the task with its stderr. Once
    the last step completed, uploads the outputs to the run's staging prefix in S3."""

    def __init__(self, *, aws_conn_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    def poke(self, context: Any) -> PokeReturnValue | bool:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fruits.local_cluster import ClusterError
        from fruits.local_steps import StepFailed, check_steps, upload_outputs

        scratch = load_settings().scratch
        try:
            states = check_steps(scratch, self.job_flow_id, self.step_ids)
            self.mirror_progress(scratch)
            if states is None:
                watch_progress(self)
                return False
            uploaded = upload_outputs(scratch, self.job_flow_id, S3Hook(self.aws_conn_id))
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

        from fruits.local_cluster import read_cluster
        from fruits.progress import mirror_local
        from fruits.steps import local_path

        folder = Path(read_cluster(scratch, self.job_flow_id)["dir"]) / "s3"
        mirror_local(S3Hook(self.aws_conn_id), local_path(self.progress_uri, folder),
                     self.progress_uri)  # fmt: skip

    def step_states(self) -> dict[str, dict]:
        from fruits.local_steps import step_states

        return step_states(load_settings().scratch, self.job_flow_id, self.step_ids)

    def step_report(self, step_id: str, state: Mapping[str, Any]) -> str:
        from fruits.local_steps import failure_report

        return failure_report(load_settings().scratch, self.job_flow_id, step_id, state)


class LocalTerminateClusterOperator(BaseOperator):
    """End the cluster's processes (exactly those it recorded); safe to run again."""

    template_fields: Sequence[str] = ("job_flow_id",)

    def __init__(self, *, job_flow_id: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.job_flow_id = job_flow_id

    def execute(self, context: Any) -> dict[str, str]:
        from fruits.local_cluster import stop_cluster

        return stop_cluster(load_settings().scratch, self.job_flow_id)


def cluster_tasks(settings: Settings, plan: Any) -> ClusterTasks:
    create_job_flow = LocalCreateClusterOperator(
        task_id="create_job_flow",
        job_flow=plan["job_flow"],
        retries=0,  # a retry could leave a second cluster behind
    )
    add_steps = LocalAddStepsOperator(
        task_id="add_steps",
        job_flow_id=create_job_flow.output,
        steps=plan["steps"],
        aws_conn_id=settings.aws_conn_id,
        retries=0,  # a retry would run the steps twice
    )
    wait_for_step = LocalStepSensor(
        task_id="wait_for_step", **step_sensor_args(settings, plan, create_job_flow, add_steps)
    )
    remove_cluster = LocalTerminateClusterOperator(
        task_id="remove_cluster", job_flow_id=create_job_flow.output
    )
    return ClusterTasks(create_job_flow, add_steps, wait_for_step, remove_cluster)
