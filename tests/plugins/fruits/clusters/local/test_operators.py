"""The local backend's step sensor: a poking one reads the steps' state files every
second (local files: a step's end is seen at once) and goes to S3 for their progress
only every ``FRUITS_POKE_INTERVAL``; a rescheduled one keeps one look per interval."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from fruits.clusters.common import step_runner
from fruits.clusters.local import cluster as local_cluster
from fruits.clusters.local import operators
from fruits.clusters.local.operators import STEP_CHECK_SECONDS, LocalStepsSensor

STEPS = ["s-1", "s-2"]


def sensor(**kwargs) -> LocalStepsSensor:
    args = {"task_id": "wait_for_step", "cluster_id": "local-test-1", "step_ids": STEPS,
            "aws_conn_id": "aws_default", "progress_uri": "s3://b/progress/", **kwargs}  # fmt: skip
    return LocalStepsSensor(**args)


def test_a_poking_sensor_reads_the_state_files_every_second_and_s3_as_asked():
    poking = sensor(poke_interval=5, mode="poke")
    assert (poking.poke_interval, poking.progress_interval) == (STEP_CHECK_SECONDS, 5)
    assert STEP_CHECK_SECONDS == 1.0
    assert sensor(poke_interval=0.5, mode="poke").poke_interval == 0.5  # never slower


def test_a_rescheduled_sensor_keeps_its_interval():
    """Rescheduled every second, a sensor would race the scheduler (apache/airflow#71172)."""
    rescheduled = sensor(poke_interval=60, mode="reschedule")
    assert (rescheduled.poke_interval, rescheduled.progress_interval) == (60, 60)


def test_progress_is_due_on_the_first_look_then_once_per_interval():
    watcher = sensor(poke_interval=5, mode="poke")
    assert watcher.progress_due(now=100.0)
    assert not watcher.progress_due(now=101.0)
    assert not watcher.progress_due(now=104.9)
    assert watcher.progress_due(now=105.0)
    assert not watcher.progress_due(now=106.0)


def running_cluster(scratch: Path) -> Path:
    """A cluster whose runner is this very process (alive), with both steps' state files."""
    folder = local_cluster.cluster_dir(scratch, "local-test-1")
    runner = {"pid": os.getpid(), "create_time": psutil.Process().create_time()}
    folder.mkdir(parents=True)
    (folder / "cluster.json").write_text(
        json.dumps({"id": "local-test-1", "dir": str(folder), "processes": {"steps": runner}})
    )
    for sid in STEPS:
        (folder / "steps" / sid).mkdir(parents=True)
        step_runner.write_state(folder / "steps" / sid, state=step_runner.PENDING)
    return folder


@pytest.fixture
def looks(tmp_path, monkeypatch) -> dict[str, int]:
    """How often the sensor went to S3: progress copied and read, outputs uploaded (and
    through which hooks: ``hooks``)."""
    monkeypatch.setenv("FRUITS_SCRATCH", str(tmp_path))
    counts = {"mirror": 0, "watch": 0, "upload": 0}
    hooks = []

    def count(name, result=None):
        def called(*args, **kwargs):
            counts[name] += 1
            hooks.extend(a for a in args if type(a).__name__ == "S3Hook")
            return result

        return called

    monkeypatch.setattr(LocalStepsSensor, "mirror_progress", count("mirror"))
    monkeypatch.setattr(operators, "watch_progress", count("watch"))
    monkeypatch.setattr(
        "fruits.clusters.local.steps.upload_outputs", count("upload", {"s3://b/o/": {}})
    )
    counts["hooks"] = hooks
    return counts


def test_every_poke_reads_the_steps_but_only_a_due_one_goes_to_s3(tmp_path, looks):
    folder = running_cluster(tmp_path)
    watcher = sensor(poke_interval=5, mode="poke")
    step_runner.write_state(folder / "steps" / "s-1", state=step_runner.RUNNING)
    assert watcher.poke({}) is False  # the first look: progress too
    assert (looks["mirror"], looks["watch"], looks["upload"]) == (1, 1, 0)
    watcher._progress_at = float("inf")  # not due again within this test
    assert watcher.poke({}) is False
    assert (looks["mirror"], looks["watch"], looks["upload"]) == (1, 1, 0)
    for sid in STEPS:  # both ended: the very next look sees it, whatever the progress
        step_runner.write_state(folder / "steps" / sid, state=step_runner.COMPLETED)
    done = watcher.poke({})
    assert done.is_done and done.xcom_value["steps"] == dict.fromkeys(STEPS, "COMPLETED")
    # the steps' last progress (the run summary's step times) is copied, then the outputs
    assert (looks["mirror"], looks["watch"], looks["upload"]) == (2, 1, 1)
    # one boto3 client for all its looks at S3
    assert looks["hooks"] and all(hook is watcher.s3_hook for hook in looks["hooks"])


def test_a_step_state_is_logged_when_it_changes_not_on_every_look(tmp_path, looks, caplog):
    folder = running_cluster(tmp_path)
    watcher = sensor(poke_interval=5, mode="poke")
    step_runner.write_state(folder / "steps" / "s-1", state=step_runner.RUNNING)
    with caplog.at_level("INFO", logger="fruits.clusters.local.steps"):
        for _ in range(3):
            watcher.poke({})
    assert [r.getMessage() for r in caplog.records] == ["step s-1: RUNNING", "step s-2: PENDING"]
