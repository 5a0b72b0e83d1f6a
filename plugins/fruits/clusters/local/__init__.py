"""The ``local`` backend: a Spark standalone cluster on the Airflow worker, on loopback.

- :mod:`.cluster`: the cluster's life cycle (a master and a worker in process groups of
  their own, :mod:`.process_groups`), and why it lives where it does;
- :mod:`.steps`: the run's steps, rewritten for the local master, staged and run;
- :mod:`.operators`: the Airflow operators around both;
- :mod:`.sparkenv`, :mod:`.spark_install` and :mod:`.jvm_archive`: how this host starts
  Spark (loopback, this Python, C1-compiled drivers, one class archive).

Inputs are staged from S3 to a scratch folder and the outputs uploaded to the run's
staging prefix, since local Spark has no s3a connector here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fruits.clusters import ClusterTasks, step_sensor_args
from fruits.settings import Settings

REMOTE = False  # the cluster runs where the code and the weights already are


def code_files() -> dict[str, bytes]:
    return {}


def cluster_request(
    settings: Settings, *, name: str, code: Mapping[str, str], run_key: str, timeout: int
) -> dict[str, Any]:
    return {"Name": name, "cores": settings.local_cores, "memory": settings.local_memory}


def clear_leftovers(settings: Settings) -> dict[str, Any]:
    """Stop the clusters whose owner process is gone (runs killed before their teardown)."""
    from fruits.clusters.local.cluster import reap_abandoned

    return reap_abandoned(settings.scratch)


def preflight(settings: Settings, run: dict) -> None:
    """Refuse a distributed executor: the cluster, its scratch folder and its sensor must
    share the host that runs ``create_job_flow``."""
    from fruits.clusters.common.preflight import single_host

    single_host()


def cluster_tasks(settings: Settings, plan: Any) -> ClusterTasks:
    from fruits.clusters.local.operators import (
        LocalAddStepsOperator,
        LocalCreateClusterOperator,
        LocalStepsSensor,
        LocalTerminateClusterOperator,
    )

    create_job_flow = LocalCreateClusterOperator(
        task_id="create_job_flow",
        cluster=plan["cluster"],
    )
    add_steps = LocalAddStepsOperator(
        task_id="add_steps",
        cluster_id=create_job_flow.output,
        steps=plan["steps"],
        aws_conn_id=settings.aws_conn_id,
    )
    wait_for_step = LocalStepsSensor(
        task_id="wait_for_step", **step_sensor_args(settings, plan, create_job_flow, add_steps)
    )
    remove_cluster = LocalTerminateClusterOperator(
        task_id="remove_cluster", cluster_id=create_job_flow.output
    )
    return ClusterTasks((create_job_flow,), (add_steps, wait_for_step), remove_cluster)
