"""One cluster at a time across all runs of the DAG, backfills included.

``max_active_runs=1`` bounds scheduled and manual runs, but Airflow 3 lets a backfill
run as many runs at once as its own ``--max-active-runs`` (10 unless given): a
backfill over N dates would start N clusters. The ``wait_for_cluster_slot`` sensor,
just before ``create_job_flow``, lets a run take the cluster only when no other run
holds one and no earlier waiting run is ahead of it. Runs are ordered by run id
(backfill ids carry the logical date, so a backfill goes in date order); a total order
means two runs never pass together and never wait for each other.

A run holds the slot until its teardown *and* its publication have finished: the run
that takes the slot next clears the batch's leftover staging and local clusters
(``clear_leftovers``), which must never pull them from under a run still publishing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

GATE = "wait_for_cluster_slot"
RELEASE = "remove_cluster"
PUBLISH = "publish_batch"
RELEASES = (RELEASE, PUBLISH)  # the slot is free once both of these are done
# A run whose gate is in one of these never takes the cluster (again).
GATE_DONE = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
# Once the teardown is in one of these, the run's cluster is gone.
RELEASED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


def unfinished(tasks: Mapping[str, str | None]) -> list[str]:
    """Which of RELEASES a run that took the slot has yet to finish. A run of an older
    version of the DAG has no publish_batch at all: its teardown alone counts."""
    return [t for t in RELEASES if (t in tasks or t == RELEASE) and tasks.get(t) not in RELEASED]


def blocker(
    me: str,
    states: Mapping[str, Mapping[str, str | None]],
    is_running: Callable[[str], bool],
) -> str | None:
    """Why run ``me`` must wait (a message naming the other run), or None if it may go.

    ``states``: run id -> {task id: state} for GATE and RELEASES, as Airflow reports
    them; ``is_running(run_id)``: whether that DAG run is running (queued runs cannot
    move, so waiting for them could deadlock).
    """
    for run_id in sorted(states):
        if run_id == me:
            continue
        tasks = states[run_id]
        pending = unfinished(tasks) if tasks.get(GATE) == "success" else []
        if pending:
            return f"run {run_id} holds the cluster (its {' and '.join(pending)} not finished)"
    for run_id in sorted(states):
        if run_id >= me:
            break
        if states[run_id].get(GATE) not in GATE_DONE and is_running(run_id):
            return f"run {run_id} is ahead in line for the cluster"
    return None
