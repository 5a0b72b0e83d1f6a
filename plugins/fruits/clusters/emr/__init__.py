"""The ``emr`` backend: Amazon EMR 7 through the provider's operators.

The job flow comes from ``job_flow.json`` beside this file (:mod:`.job_flow`); the
nodes' bootstrap action is ``bootstrap.sh``; ``wait_for_step`` is
:class:`.step_sensor.EmrStepsSensor`, the provider's step sensor with a timeout sized by
the batch and the failed step's stderr.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fruits.clusters import ClusterTasks, step_sensor_args
from fruits.settings import Settings

REMOTE = True  # the nodes read code and weights from code/<version>/


def code_files() -> dict[str, bytes]:
    return {}


def cluster_request(
    settings: Settings, *, name: str, code: Mapping[str, str], run_key: str, timeout: int
) -> dict[str, Any]:
    from fruits.clusters.emr.job_flow import job_flow

    return job_flow(settings, name=name, code=code)


def clear_leftovers(settings: Settings) -> dict[str, Any]:
    return {}  # EMR ends an idle cluster by itself (auto-termination)


def preflight(settings: Settings, run: dict) -> None:
    """``FRUITS_EMR_SUBNET``, if set: in the connection's region, tagged for EMR; the
    staged wheels of the nodes' requirements (``make stage-wheels``)."""
    from fruits.clusters.common.preflight import emr_network, staged_wheels

    emr_network(settings)
    staged_wheels(settings, "emr")  # the nodes install offline from them


def cluster_tasks(settings: Settings, plan: Any) -> ClusterTasks:
    from airflow.providers.amazon.aws.operators.emr import (
        EmrAddStepsOperator,
        EmrCreateJobFlowOperator,
        EmrTerminateJobFlowOperator,
    )

    from fruits.clusters.emr.step_sensor import EmrStepsSensor

    create_job_flow = EmrCreateJobFlowOperator(
        task_id="create_job_flow",
        job_flow_overrides=plan["cluster"],
        aws_conn_id=settings.aws_conn_id,
        emr_conn_id=None,
    )
    add_steps = EmrAddStepsOperator(
        task_id="add_steps",
        job_flow_id=create_job_flow.output,
        steps=plan["steps"],
        aws_conn_id=settings.aws_conn_id,
    )
    wait_for_step = EmrStepsSensor(
        task_id="wait_for_step",
        log_wait=settings.emr.log_wait,
        **step_sensor_args(settings, plan, create_job_flow, add_steps),
    )
    remove_cluster = EmrTerminateJobFlowOperator(
        task_id="remove_cluster",
        job_flow_id=create_job_flow.output,
        aws_conn_id=settings.aws_conn_id,
    )
    return ClusterTasks((create_job_flow,), (add_steps, wait_for_step), remove_cluster)
