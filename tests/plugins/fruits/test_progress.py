"""Live progress: the job side's arithmetic and UDP tally (fruits_spark.progress), the
line wait_for_step logs and the stall rule (fruits.progress), read from moto's S3."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from types import SimpleNamespace

import pytest
from dag_support import BUCKET

from fruits import progress
from fruits.clusters.common.step_sensor import watch_progress
from fruits_spark import progress as job_progress

FOLDER = f"s3://{BUCKET}/runs/_staging/batch=2026-11-24/k-1/progress/"
NOW = 1_800_000_000.0


def running(**changes) -> dict:
    record = {
        "step": "featurize", "phase": "running", "done": 41_200, "total": 90_000,
        "rate": 212.0, "eta_seconds": 48_800 / 212, "started_at": NOW - 300,
        "updated_at": NOW - 5, "changed_at": NOW - 5, "elapsed_seconds": 295.0,
        "average_rate": 139.7, "finished": False,
    }  # fmt: skip
    return {**record, **changes}


def test_the_featurize_line_says_done_total_rate_and_time_left():
    assert progress.progress_line(running()) == (
        "featurize: 41,200 / 90,000 images (46%), 212 img/s, about 4 min left"
    )
    assert progress.progress_line(running(done=0, rate=None, eta_seconds=None)) == (
        "featurize: 0 / 90,000 images (0%), starting"
    )
    assert progress.progress_line(running(done=89_990)).startswith(
        "featurize: 89,990 / 90,000 images (99%)"  # not 100% before the end
    )
    done = running(done=90_000, finished=True, phase="done", elapsed_seconds=425.0,
                   average_rate=211.8)  # fmt: skip
    assert progress.progress_line(done) == (
        "featurize: 90,000 / 90,000 images (100%), done in 7 min (212 img/s)"
    )


def test_the_reduce_line_names_its_pass():
    record = {"step": "reduce", "phase": "pass 2/2: projection", "done": 0, "total": None,
              "elapsed_seconds": 12.4, "finished": False}  # fmt: skip
    assert progress.progress_line(record) == "reduce: pass 2/2: projection, 12 s"
    record.update(finished=True, done=90_000, elapsed_seconds=95)
    assert progress.progress_line(record) == "reduce: done in 2 min (90,000 rows)"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0 s"), (89, "89 s"), (230, "4 min"), (7500, "2 h 05 min")]
)
def test_durations_read_as_a_person_says_them(seconds, text):
    assert progress.duration(seconds) == text


def test_a_step_is_stalled_when_its_count_or_its_reports_stop():
    ten_min = 600
    assert progress.stall_message(running(), NOW, ten_min) is None
    stuck = running(changed_at=NOW - 700, updated_at=NOW - 3)  # reports, count frozen
    message = progress.stall_message(stuck, NOW, ten_min)
    assert message.startswith("featurize stalled: no progress for 12 min (limit 10 min")
    assert "41,200 / 90,000 images" in message
    silent = running(changed_at=NOW - 700, updated_at=NOW - 650)  # the driver went quiet
    assert "no progress report for 11 min" in progress.stall_message(silent, NOW, ten_min)
    assert progress.stall_message(stuck, NOW, 0) is None  # FRUITS_STALL_MINUTES=0: off
    assert progress.stall_message({**stuck, "finished": True}, NOW, ten_min) is None


def test_rate_is_over_the_last_minute_and_eta_follows():
    samples: deque = deque()
    assert job_progress.rate_over(samples, 0.0, 0) is None  # no history yet
    for t in range(0, 121, 15):  # 0..120 s: 10 img/s for a minute, then 100 img/s
        done = 10 * t if t <= 60 else 600 + 100 * (t - 60)
        rate = job_progress.rate_over(samples, float(t), done)
    assert rate == pytest.approx(100.0)  # only the last minute counts
    assert job_progress.eta_seconds(6600, 9600, rate) == pytest.approx(30.0)
    assert job_progress.eta_seconds(10, None, rate) is None
    assert job_progress.eta_seconds(10, 100, None) is None
    short: deque = deque()
    job_progress.rate_over(short, 0.0, 0)
    assert job_progress.rate_over(deque(short), 0.3, 30) is None  # under a second: no rate
    assert job_progress.rate_over(short, 0.3, 30, least=0.2) == pytest.approx(100.0)


def test_workers_tally_reaches_the_driver_and_the_last_write_is_the_jobs_count():
    writes: list[dict] = []
    reporter = job_progress.Reporter(
        "featurize", lambda data: writes.append(json.loads(data)), interval=0.1,
        total=100, counting=True,
    )  # fmt: skip
    tally = reporter.tally()
    assert tally.port and tally.host == "127.0.0.1"
    for _ in range(4):
        tally.add(8)  # what a worker does after each Arrow batch
    deadline = time.monotonic() + 5
    while not any(w["done"] == 32 for w in writes) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(w["done"] == 32 and not w["finished"] for w in writes), writes[-1]
    reporter.finish(100)
    assert writes[-1]["done"] == 100 and writes[-1]["finished"] and writes[-1]["phase"] == "done"
    assert writes[0]["done"] == 0 and writes[0]["total"] == 100  # written at once
    job_progress.Tally(None, None).add(3)  # without --progress: nothing sent, no error


def logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "wait_for_step"]


def put_progress(aws, **records) -> None:
    prefix = FOLDER.removeprefix(f"s3://{BUCKET}/")
    for step, record in records.items():
        aws.s3.put_object(Bucket=BUCKET, Key=f"{prefix}{step}.json", Body=json.dumps(record))


def sensor(stall_seconds: float = 600) -> SimpleNamespace:
    return SimpleNamespace(
        log=logging.getLogger("wait_for_step"), aws_conn_id="aws_default",
        progress_uri=FOLDER, stall_seconds=stall_seconds,
    )  # fmt: skip


def test_the_sensor_logs_each_steps_line_from_s3(aws, caplog):
    aws.s3.create_bucket(Bucket=BUCKET)
    now = time.time()
    finished = running(done=90_000, finished=True, elapsed_seconds=425.0, average_rate=211.8,
                       updated_at=now - 60, changed_at=now - 60)  # fmt: skip
    reduce = {"step": "reduce", "phase": "pass 1/2: moments", "elapsed_seconds": 3,
              "updated_at": now - 2, "changed_at": now - 2, "finished": False}  # fmt: skip
    put_progress(aws, featurize=finished, reduce=reduce)
    with caplog.at_level(logging.INFO, logger="wait_for_step"):
        watch_progress(sensor())
    assert logged(caplog) == [
        "featurize: 90,000 / 90,000 images (100%), done in 7 min (212 img/s)",
        "reduce: pass 1/2: moments, 3 s",
    ]


def test_a_stalled_step_fails_the_sensor_with_the_stall_message(aws, caplog):
    from airflow.sdk.exceptions import AirflowFailException

    aws.s3.create_bucket(Bucket=BUCKET)
    now = time.time()
    put_progress(aws, featurize=running(updated_at=now - 5, changed_at=now - 1300))
    with pytest.raises(AirflowFailException, match=r"featurize stalled: no progress for 22 min"):
        watch_progress(sensor(stall_seconds=1200))
    watch_progress(sensor(stall_seconds=0))  # the rule off: only logged


def test_no_progress_yet_or_a_half_written_object_is_only_logged(aws, caplog):
    aws.s3.create_bucket(Bucket=BUCKET)
    with caplog.at_level(logging.INFO, logger="wait_for_step"):
        watch_progress(sensor())
        prefix = FOLDER.removeprefix(f"s3://{BUCKET}/")
        aws.s3.put_object(Bucket=BUCKET, Key=f"{prefix}featurize.json", Body=b'{"step": "fea')
        watch_progress(sensor())
    assert logged(caplog) == [f"progress: no report yet at {FOLDER}"] * 2


def test_step_times_for_the_summary_come_from_the_finished_reports():
    records = {
        "featurize": running(finished=True, elapsed_seconds=425.04, average_rate=211.8),
        "reduce": {"step": "reduce", "finished": True, "elapsed_seconds": 31.26},
    }
    assert progress.step_times(records) == {
        "step_seconds": {"featurize": 425.0, "reduce": 31.3},
        "featurize_rate": 211.8,
    }
    assert progress.step_times({"featurize": running()}) == {}  # still running: nothing


def test_a_count_frozen_since_the_epoch_is_stalled_too():
    assert "no progress for" in progress.stall_message(running(changed_at=0.0), NOW, 60)
