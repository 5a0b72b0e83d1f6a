"""Cluster backends: one module each (``local``, ``emr``, ``ec2``), one interface.

The DAG asks :func:`backend` for the module that ``FRUITS_COMPUTE`` names and wires the
four tasks its :func:`cluster_tasks` returns; it holds no backend-specific code. A
backend module provides:

- ``REMOTE``: whether its nodes read the job code and weights from S3 (then
  ``upload_code`` ships ImageNet weights with the code: the nodes need no internet).
- ``code_files() -> dict[str, Path]``: extra files its nodes need under ``code/<version>/``.
- ``cluster_request(settings, *, name, code, run_key, timeout) -> dict``: the cluster
  request, JSON, computed by ``plan_run`` (so the DAG file parses without AWS calls).
- ``clear_leftovers(settings) -> dict``: what runs killed before their teardown left.
- ``cluster_tasks(settings, plan) -> ClusterTasks``: ``create_job_flow`` -> ``add_steps``
  -> ``wait_for_step``, and ``remove_cluster``, which the DAG makes the teardown of
  ``create_job_flow``. ``plan`` is ``plan_run``'s output (``job_flow``, ``steps``,
  ``timeout``). Their ``wait_for_step`` sensors take :func:`step_sensor_args`.

Adding a backend adds a module here and its tests; the DAG file does not change.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

TASK_IDS = ("create_job_flow", "add_steps", "wait_for_step", "remove_cluster")


@dataclass(frozen=True)
class ClusterTasks:
    """A backend's four tasks, with the task ids of :data:`TASK_IDS`."""

    create_job_flow: Any
    add_steps: Any
    wait_for_step: Any
    remove_cluster: Any

    def __post_init__(self) -> None:
        ids = tuple(getattr(self, name).task_id for name in TASK_IDS)
        if ids != TASK_IDS:
            raise ValueError(f"a backend's tasks must be {TASK_IDS}, not {ids}")


def backend(compute: str) -> ModuleType:
    """The backend module named ``compute`` (one of ``config.COMPUTE_BACKENDS``)."""
    from fruits.config import COMPUTE_BACKENDS, ConfigError

    if compute not in COMPUTE_BACKENDS:
        raise ConfigError(f"no cluster backend {compute!r}: choose one of {COMPUTE_BACKENDS}")
    return importlib.import_module(f"{__name__}.{compute}")


def step_sensor_args(settings: Any, plan: Any, create_job_flow: Any, add_steps: Any) -> dict:
    """What every backend's ``wait_for_step`` sensor is given: the cluster and the step
    ids from the tasks before it, the batch's timeout from ``plan``, the mode the poke
    interval calls for (``Settings.sensor_mode``: a long batch holds no worker slot), and
    where the steps write their progress."""
    return {
        "job_flow_id": create_job_flow.output,
        "step_ids": add_steps.output,
        "timeout_seconds": plan["timeout"],
        "poke_interval": settings.poke_interval,
        "mode": settings.sensor_mode,
        "aws_conn_id": settings.aws_conn_id,
        # live progress (fruits.progress): logged on each poke, a stalled step fails early
        "progress_uri": plan["progress"],
        "stall_seconds": settings.stall_minutes * 60,
    }
