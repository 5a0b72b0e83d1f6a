"""Cluster backends: one folder each (``local/``, ``emr/``, ``ec2/``), one interface.

The DAG asks :func:`backend` for the one ``FRUITS_COMPUTE`` names and wires the tasks its
``cluster_tasks`` returns; it holds no backend-specific code. What every backend shares
(step states and the done rule, the step runner, the step sensor, the steps themselves,
Spark standalone helpers) is written once, in ``common/``.

Adding a backend is one folder here, whose ``__init__.py`` is a :class:`Backend`, plus
its name in ``fruits.settings.COMPUTE_BACKENDS`` (docs/backends.md, "Adding a backend").
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

# The ids users see in the UI, the same whatever the backend: the cluster's setup, the
# last task of the body (the steps are done once it succeeds) and the teardown.
SETUP_ID = "create_job_flow"
DONE_ID = "wait_for_step"
TEARDOWN_ID = "remove_cluster"


@dataclass(frozen=True)
class ClusterTasks:
    """A backend's tasks as one group with a known entry, exit and teardown.

    ``setup`` creates the cluster (its first task is the group's entry; the teardown is
    made the teardown of all of them), ``body`` runs and waits for the steps in order (its
    last task is the group's exit), ``teardown`` removes the cluster whatever happened.

    Every task before the exit creates or submits something, so none of them retries: a
    retry could leave a second cluster behind or run the steps twice. The exit only
    watches, and keeps the DAG's retries.
    """

    setup: tuple[Any, ...]
    body: tuple[Any, ...]
    teardown: Any

    def __post_init__(self) -> None:
        if not self.setup or not self.body:
            raise ValueError("a backend's tasks need a setup and a body")
        ids = (self.setup[0].task_id, self.body[-1].task_id, self.teardown.task_id)
        if ids != (SETUP_ID, DONE_ID, TEARDOWN_ID):
            raise ValueError(
                f"a backend's entry, exit and teardown must be {SETUP_ID}, {DONE_ID} and "
                f"{TEARDOWN_ID}, not {', '.join(ids)}"
            )
        for task in self.in_order[:-1]:
            task.retries = 0

    @property
    def entry(self) -> Any:
        return self.setup[0]

    @property
    def exit(self) -> Any:
        return self.body[-1]

    @property
    def in_order(self) -> tuple[Any, ...]:
        """Setup then body: the chain the DAG wires before the teardown."""
        return (*self.setup, *self.body)


def step_sensor_args(settings: Any, plan: Any, create_job_flow: Any, add_steps: Any) -> dict:
    """What every backend's ``wait_for_step`` sensor is given: the cluster and the step
    ids from the tasks before it, the batch's timeout from ``plan``, the mode the poke
    interval calls for (``Settings.sensor_mode``: a long batch holds no worker slot), and
    where the steps write their progress."""
    return {
        "cluster_id": create_job_flow.output,
        "step_ids": add_steps.output,
        "timeout_seconds": plan["timeout"],
        "poke_interval": settings.poke_interval,
        "mode": settings.sensor_mode,
        "aws_conn_id": settings.aws_conn_id,
        # live progress (fruits.progress): logged on each poke, a stalled step fails early
        "progress_uri": plan["progress"],
        "stall_seconds": settings.stall_minutes * 60,
    }


class Backend(Protocol):
    """What a backend's package provides (its ``__init__.py``).

    Importing the package must not import Airflow: its operators are imported inside
    ``cluster_tasks``, so the bench, the nodes and the dev tools can import the
    backend's other modules (``local.sparkenv``, ``emr.job_flow``...) without it."""

    # Whether its nodes read the job code and weights from S3 (then ``upload_code``
    # ships the ImageNet weights with the code: the nodes need no internet for them).
    REMOTE: bool

    def code_files(self) -> dict[str, bytes]:
        """Extra files its nodes need under ``code/<version>/``."""

    def cluster_request(
        self, settings: Any, *, name: str, code: Mapping[str, str], run_key: str, timeout: int
    ) -> dict[str, Any]:
        """The cluster request, JSON, computed by ``plan_run`` (so the DAG file parses
        without AWS calls)."""

    def clear_leftovers(self, settings: Any) -> dict[str, Any]:
        """Remove what runs killed before their teardown left; say what."""

    def cluster_tasks(self, settings: Any, plan: Any) -> ClusterTasks:
        """The backend's tasks; ``plan`` is ``plan_run``'s output (``cluster``,
        ``steps``, ``timeout``, ``progress``)."""

    def preflight(self, settings: Any, run: dict) -> None:
        """Check the backend's settings in ``validate_params``, before anything is uploaded
        or created (``run``: the checked parameters); raise
        ``fruits.clusters.common.preflight.PreflightError`` saying what to change. Airflow
        and boto3 are imported inside."""


def backend(compute: str) -> Backend:
    """The backend named ``compute`` (one of ``fruits.settings.COMPUTE_BACKENDS``)."""
    from fruits.settings import COMPUTE_BACKENDS, ConfigError

    if compute not in COMPUTE_BACKENDS:
        raise ConfigError(f"no cluster backend {compute!r}: choose one of {COMPUTE_BACKENDS}")
    return cast(Backend, importlib.import_module(f"{__name__}.{compute}"))
