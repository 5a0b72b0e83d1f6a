"""What a finished DAG run's metadata says: each task's duration and the run's own, read
from Airflow's SQLite database after ``airflow dags test`` ended, and how long the
local backend's staging took.

The database is read, never written, and only once the run is over: Airflow's own
start and end dates are the figures, not timestamps parsed from the log. Staging (S3 to
the cluster's scratch folder) happens inside the local backend's ``add_steps`` task;
when that task's return value or its log states how long staging took, that figure is
taken, else the task's whole duration (:func:`staging_seconds` says which).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The stages of a run and the task that is each (featurize and reduce come from the run
# summary's step_seconds; staging from add_steps, see staging_seconds).
STAGE_TASKS = {
    "upload": "upload_batch",
    "staging": "add_steps",
    "publish": "publish_batch",
    "teardown": "remove_cluster",
}


def parse_time(value: str | None) -> datetime | None:
    """A date as SQLAlchemy stores it in SQLite (UTC, ``YYYY-MM-DD HH:MM:SS[.ffffff]``)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def seconds_between(start: str | None, end: str | None) -> float | None:
    began, ended = parse_time(start), parse_time(end)
    return None if began is None or ended is None else (ended - began).total_seconds()


def _connect(database: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    return db


def last_run(database: Path, dag_id: str, logical_date: str) -> dict[str, Any]:
    """The newest DAG run of ``dag_id`` whose logical date falls on ``logical_date``."""
    with _connect(database) as db:
        row = db.execute(
            "select run_id, state, start_date, end_date, logical_date, run_after from dag_run "
            "where dag_id = ? and substr(logical_date, 1, 10) = ? order by id desc limit 1",
            (dag_id, logical_date),
        ).fetchone()
    if row is None:
        raise LookupError(f"no run of {dag_id} for {logical_date} in {database}")
    run = dict(row)
    run["started"] = run_start(run["start_date"], run["run_after"])
    run["seconds"] = seconds_between(run["started"], run["end_date"])
    return run


def run_start(start_date: str | None, run_after: str | None) -> str | None:
    """When the DAG run really started. ``airflow dags test`` (Airflow 3.3) records the
    run's logical date as its ``start_date``, months before it ran; the run was created,
    and started, at ``run_after``. So the later of the two: for a run the scheduler
    started, ``start_date`` (after ``run_after``); for ``dags test``, ``run_after``."""
    began, after = parse_time(start_date), parse_time(run_after)
    if began is None or (after is not None and after > began):
        return run_after
    return start_date


def task_rows(database: Path, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    with _connect(database) as db:
        rows = db.execute(
            "select task_id, start_date, end_date, state, try_number from task_instance "
            "where dag_id = ? and run_id = ? order by start_date",
            (dag_id, run_id),
        ).fetchall()
    return [dict(row) for row in rows]


def task_durations(rows: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """task id -> {seconds, state}; seconds None for a task that never ran (skipped)."""
    return {
        row["task_id"]: {
            "seconds": seconds_between(row["start_date"], row["end_date"]),
            "state": row["state"],
        }
        for row in rows
    }


def task_at(rows: list[Mapping[str, Any]], when: float | None) -> str | None:
    """The task that was running at Unix time ``when`` (the last to start before it), so
    a peak of the one ``airflow dags test`` process can be put down to a task."""
    if when is None:
        return None
    running = None
    for row in rows:
        start, end = parse_time(row["start_date"]), parse_time(row["end_date"])
        if (
            start is not None
            and start.timestamp() <= when
            and (
                end is None or when <= end.timestamp() + 1.0  # the sampler's half second
            )
        ):
            running = row["task_id"]
    return running


def xcom_value(database: Path, dag_id: str, run_id: str, task_id: str) -> Any:
    """A task's return value (JSON), or None."""
    with _connect(database) as db:
        row = db.execute(
            "select value from xcom where dag_id = ? and run_id = ? and task_id = ? "
            "and key = 'return_value'",
            (dag_id, run_id, task_id),
        ).fetchone()
    if row is None or row["value"] is None:
        return None
    raw = row["value"]
    try:
        value = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError:
        return raw
    if isinstance(value, str):  # a plain string (a cluster id), or JSON stored as a string
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def task_log(log_text: str, task_id: str) -> str:
    """The lines ``airflow dags test`` printed while running ``task_id``."""
    start = re.search(rf"\[DAG TEST\] start(?:ing| task) task_id={re.escape(task_id)}\b", log_text)
    if not start:
        return ""
    end = re.search(rf"\[DAG TEST\] end task task_id={re.escape(task_id)}\b",
                    log_text[start.end():])  # fmt: skip
    return log_text[start.start() : start.end() + end.start() if end else len(log_text)]


_KEY = re.compile(r"stag\w*(second|_s$|secs)", re.IGNORECASE)
_LOG = re.compile(
    r"\bstag(?:ed|ing)\b[^\n]*?\b(?:in|took)\s+([0-9]+(?:\.[0-9]+)?)\s*(?:s\b|sec)",
    re.IGNORECASE,
)


def _reported(value: Any) -> float | None:
    """A number under a key like ``staging_seconds`` / ``stage_s`` anywhere in ``value``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, int | float) and not isinstance(item, bool) and _KEY.search(key):
                return float(item)
        for item in value.values():
            if (found := _reported(item)) is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            if (found := _reported(item)) is not None:
                return found
    return None


def staging_seconds(
    xcom: Any, log_text: str, task_seconds: float | None
) -> tuple[float | None, str]:
    """How long staging took, and where the figure comes from: the add_steps task's return
    value, then its log (``staged ... in 12.3 s``), else the task's duration."""
    if (found := _reported(xcom)) is not None:
        return found, "add_steps return value"
    if match := _LOG.search(task_log(log_text, STAGE_TASKS["staging"])):
        return float(match.group(1)), "add_steps log"
    return task_seconds, "add_steps task duration"
