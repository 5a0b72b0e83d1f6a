"""The opt-in worker timings the bench reads: written only when asked, with what was seen."""

from __future__ import annotations

import json
import os
import time

import pyarrow as pa

from fruits_spark import profiling

ENV = "FRUITS_TEST_PROFILE"


def batches(*sizes: int):
    for n in sizes:
        yield pa.RecordBatch.from_pydict({"x": list(range(n))})


def test_task_times_written_when_the_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path / "profile"))
    before = time.time()
    times = profiling.TaskTimes(ENV, "summary")
    seen = 0
    for b in times.batches(batches(3, 0, 5)):
        with times.computing():
            time.sleep(0.02)
            seen += b.num_rows
    times.done()
    (line,) = (tmp_path / "profile" / f"{os.getpid()}.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["event"] == "summary"
    assert record["rows"] == seen == 8
    assert before <= record["called"] <= record["first_batch"] <= record["end"]
    assert 0.06 <= record["compute_s"] < record["end"] - record["called"] + 1e-6
    start = record["process_start"]
    assert start is None or start <= record["called"]  # None off Linux


def test_nothing_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    times = profiling.TaskTimes(ENV, "project")
    assert sum(b.num_rows for b in times.batches(batches(4))) == 4
    times.done()
    assert times.rows == 4
    assert list(tmp_path.iterdir()) == []
