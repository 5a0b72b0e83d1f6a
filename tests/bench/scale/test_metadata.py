"""The scale bench's reading of Airflow's metadata: durations, the dags test start, staging."""

from __future__ import annotations

import json
import sqlite3

import pytest

from bench.scale.metadata import (
    last_run,
    parse_time,
    run_start,
    staging_seconds,
    task_at,
    task_durations,
    task_log,
    task_rows,
    xcom_value,
)

RUN = "manual__2026-12-06T02:42:28.848201+00:00"
LOG = """\
x [info ] [DAG TEST] starting task_id=plan_run map_index=-1
x staging: s3://b/runs/_staging/batch=2026-01-10/key/
x [info ] [DAG TEST] end task task_id=plan_run map_index=-1
x [info ] [DAG TEST] starting task_id=add_steps map_index=-1
x [info ] staging s3://b/raw/batch=2026-01-10/ -> /scratch/s3/b/raw/batch=2026-01-10
{staged}
x [info ] [DAG TEST] end task task_id=add_steps map_index=-1
x [info ] featurize: 304 / 304 images (100%), done in 12 s (25 img/s)
"""


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "airflow.db"
    db = sqlite3.connect(path)
    db.executescript("""
        create table dag_run (id integer primary key, dag_id text, run_id text, state text,
            start_date text, end_date text, logical_date text, run_after text);
        create table task_instance (task_id text, dag_id text, run_id text, start_date text,
            end_date text, state text, try_number integer);
        create table xcom (dag_id text, run_id text, task_id text, key text, value text);
    """)
    db.execute(
        "insert into dag_run values (1, 'fruits_pipeline', ?, 'success', "
        "'2026-01-10 00:00:00.000000', '2026-12-06 02:44:13.731443', "
        "'2026-01-10 00:00:00.000000', '2026-12-06 02:42:28.848201')",
        (RUN,),
    )
    db.execute(
        "insert into dag_run values (2, 'fruits_pipeline', 'other', 'success', "
        "'2026-01-11 00:00:00', '2026-12-06 03:00:00', '2026-01-11 00:00:00', "
        "'2026-12-06 02:50:00')"
    )
    db.executemany(
        "insert into task_instance values (?, 'fruits_pipeline', ?, ?, ?, ?, 1)",
        [
            (
                "upload_batch",
                RUN,
                "2026-12-06 02:42:37.563038",
                "2026-12-06 02:42:38.607203",
                "success",
            ),
            (
                "add_steps",
                RUN,
                "2026-12-06 02:42:45.644159",
                "2026-12-06 02:42:47.054498",
                "success",
            ),
            ("summarize_run", RUN, None, None, "skipped"),
        ],
    )
    db.execute(
        "insert into xcom values ('fruits_pipeline', ?, 'add_steps', 'return_value', ?)",
        (RUN, json.dumps(["s-1", "s-2"])),
    )
    db.execute(
        "insert into xcom values ('fruits_pipeline', ?, 'create_job_flow', 'return_value', ?)",
        (RUN, json.dumps("local-20261206031036-d7bf19")),
    )
    db.commit()
    db.close()
    return path  # fmt: skip


def test_a_dags_test_run_starts_at_run_after_not_at_its_logical_date(database):
    run = last_run(database, "fruits_pipeline", "2026-01-10")
    assert run["run_id"] == RUN
    assert run["seconds"] == pytest.approx(104.883242)  # 02:42:28.848 -> 02:44:13.731
    with pytest.raises(LookupError):
        last_run(database, "fruits_pipeline", "2026-03-01")


def test_a_run_the_scheduler_started_keeps_its_start_date():
    assert run_start("2026-01-11 00:05:00", "2026-01-11 00:00:00") == "2026-01-11 00:05:00"
    assert run_start("2026-01-10 00:00:00", "2026-12-06 02:42:28") == "2026-12-06 02:42:28"
    assert run_start(None, "2026-12-06 02:42:28") == "2026-12-06 02:42:28"


def test_task_durations_come_from_start_and_end_dates(database):
    durations = task_durations(task_rows(database, "fruits_pipeline", RUN))
    assert durations["upload_batch"]["seconds"] == pytest.approx(1.044165)
    assert durations["add_steps"] == {"seconds": pytest.approx(1.410339), "state": "success"}
    assert durations["summarize_run"] == {"seconds": None, "state": "skipped"}


def test_a_peak_is_put_down_to_the_task_running_then(database):
    rows = task_rows(database, "fruits_pipeline", RUN)
    at = parse_time("2026-12-06 02:42:46.000000").timestamp()
    assert task_at(rows, at) == "add_steps"
    assert task_at(rows, at - 5.0) is None  # between two tasks
    assert task_at(rows, None) is None


def test_the_return_value_is_read_as_json(database):
    assert xcom_value(database, "fruits_pipeline", RUN, "add_steps") == ["s-1", "s-2"]
    assert xcom_value(database, "fruits_pipeline", RUN, "upload_batch") is None
    # a string comes back as itself, not as its JSON (the cluster id names a folder)
    cluster_id = xcom_value(database, "fruits_pipeline", RUN, "create_job_flow")
    assert cluster_id == "local-20261206031036-d7bf19"


def test_a_task_log_is_the_part_between_its_start_and_end_lines():
    part = task_log(LOG.format(staged=""), "add_steps")
    assert "staging s3://b/raw" in part
    assert "plan_run" not in part.replace("add_steps", "") and "featurize" not in part
    assert task_log(LOG, "publish_batch") == ""


def test_staging_time_prefers_the_return_value_then_the_log_then_the_task():
    with_time = LOG.format(staged="x [info ] staged 2 inputs (1.2 MB) in 3.4 s")
    xcom = {"steps": ["s-1"], "staging": {"staging_seconds": 2.5}}
    assert staging_seconds(xcom, with_time, 9.0) == (2.5, "add_steps return value")
    assert staging_seconds(["s-1"], with_time, 9.0) == (3.4, "add_steps log")
    assert staging_seconds(["s-1"], LOG.format(staged=""), 9.0) == (9.0, "add_steps task duration")
    # a time outside add_steps (featurize's "done in 12 s") is not staging's
    assert staging_seconds(None, LOG.format(staged=""), None) == (None, "add_steps task duration")
