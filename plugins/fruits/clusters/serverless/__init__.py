"""The ``serverless`` backend: EMR Serverless through the provider's operators, nothing
to size or tear down by hand.

- ``create_job_flow`` (:class:`~.operators.ServerlessApplicationOperator`, the provider's
  ``EmrServerlessCreateApplicationOperator``): an application for the run (Spark,
  emr-7.x, ``FRUITS_SERVERLESS_ARCH``, maximum capacity from settings, auto-start and
  auto-stop on, no pre-initialised capacity), tagged with the run key; or the named one
  (``FRUITS_SERVERLESS_APPLICATION_ID``), reused.
- ``add_steps`` then ``wait_for_featurize``, ``add_reduce_step`` then ``wait_for_step``:
  each step a job run (``EmrServerlessStartJobOperator``, ``wait_for_completion=False``)
  and its ``EmrServerlessJobSensor`` (:class:`~.operators.ServerlessJobSensor`: the
  batch's timeout, the progress lines, the stall rule, a failed job's driver stderr).
  The jobs run the same ``spark-submit`` as the other backends, with the Python archive
  (``spark.archives``) or custom image, and executors sized for the workers
  (:mod:`.request`).
- ``remove_cluster`` (:class:`~.operators.ServerlessTeardownOperator`): cancels this
  run's job runs only; stops (``force_stop``) and deletes the application only if the
  run created it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fruits.clusters import ClusterTasks, step_sensor_args
from fruits.settings import Settings

REMOTE = True  # the jobs read code and weights from code/<version>/
SERVICE_LINKED_ROLE = "AWSServiceRoleForAmazonEMRServerless"
SERVICE_NAME = "ops.emr-serverless.amazonaws.com"


def code_files() -> dict[str, bytes]:
    return {}  # the archive (or image) carries the jobs' requirements


def cluster_request(
    settings: Settings, *, name: str, code: Mapping[str, str], run_key: str, timeout: int
) -> dict[str, Any]:
    from fruits.clusters.serverless import request

    return request.cluster_request(settings, name=name, run_key=run_key, timeout=timeout)


def clear_leftovers(settings: Settings) -> dict[str, Any]:
    from fruits.clusters.serverless import leftovers

    return leftovers.clear_leftovers(settings)


def preflight(settings: Settings, run: dict) -> None:
    """The archive (or image) the jobs need, the service-linked role EMR Serverless
    needs, and a named application: checked before anything is created."""
    from fruits.clusters.serverless import checks

    checks.preflight(settings)


def cluster_tasks(settings: Settings, plan: Any) -> ClusterTasks:
    from fruits.clusters.serverless.operators import (
        ServerlessApplicationOperator,
        ServerlessJobSensor,
        ServerlessStartJobOperator,
        ServerlessTeardownOperator,
        waits,
    )

    sls = settings.serverless
    aws = {"aws_conn_id": settings.aws_conn_id}
    create_job_flow = ServerlessApplicationOperator(
        task_id="create_job_flow", cluster=plan["cluster"], **waits(settings.poke_interval), **aws
    )
    application = create_job_flow.output
    body = []
    for index, (submit_id, wait_id) in enumerate(
        (("add_steps", "wait_for_featurize"), ("add_reduce_step", "wait_for_step"))
    ):
        submit = ServerlessStartJobOperator(
            task_id=submit_id,
            application_id=application,
            cluster=plan["cluster"],
            steps=plan["steps"],
            index=index,
            **waits(settings.poke_interval),
            **aws,
        )
        common = step_sensor_args(settings, plan, create_job_flow, submit)
        for unused in ("cluster_id", "step_ids"):
            common.pop(unused)
        wait = ServerlessJobSensor(
            task_id=wait_id,
            application_id=application,
            job_run_id=submit.output,
            log_uri=sls.log_uri,
            log_wait=sls.log_wait,
            **common,
        )
        body += [submit, wait]
    remove_cluster = ServerlessTeardownOperator(
        task_id="remove_cluster", cluster=plan["cluster"], **waits(settings.poke_interval), **aws
    )
    return ClusterTasks((create_job_flow,), tuple(body), remove_cluster)
