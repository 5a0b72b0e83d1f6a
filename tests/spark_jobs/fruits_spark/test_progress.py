"""featurize's live progress (fruits_spark.progress): the driver's progress.json moves
while the CNN runs, counted per Arrow batch by the workers, not only at the job's end."""

from __future__ import annotations

import json
import threading
import time

import featurize

from fruits.dev.sample_batch import write_batch

N = 160


def test_progress_grows_while_featurize_runs(spark, tmp_path):
    root = tmp_path / "in"
    write_batch(root, per_label=40, labels=["Apple", "Kiwi", "Lime", "Pear"])
    progress = tmp_path / "progress"
    args = featurize.parse_args(
        ["--input", str(root), "--output", str(tmp_path / "f"), "--rejected",
         str(tmp_path / "r"), "--model", "mobilenetv2", "--weights", "random",
         "--image-size", "128", "--batch-size", "2",
         "--progress", str(progress), "--progress-interval", "0.02"]
    )  # fmt: skip
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["counts"] = featurize.run(spark, args)
        except BaseException as exc:  # noqa: BLE001 -- re-raised below
            outcome["error"] = exc

    job = threading.Thread(target=run)
    job.start()
    seen: list[dict] = []
    while job.is_alive():
        try:
            record = json.loads((progress / "featurize.json").read_text())
        except (OSError, ValueError):
            record = None
        if record and (not seen or record["updated_at"] != seen[-1]["updated_at"]):
            seen.append(record)
        time.sleep(0.01)
    job.join()
    if "error" in outcome:
        raise outcome["error"]

    final = json.loads((progress / "featurize.json").read_text())
    assert final["finished"] and final["done"] == final["total"] == N
    assert final["average_rate"] > 0 and final["elapsed_seconds"] > 0
    running = [r["done"] for r in seen if not r["finished"]]
    assert all(r["total"] == N for r in seen)
    assert running == sorted(running)  # never goes back
    # the figure moved during the run: several distinct counts strictly between 0 and N
    assert len({d for d in running if 0 < d < N}) >= 3, running
    assert any(r["rate"] for r in seen if not r["finished"])


def test_a_steps_time_counts_from_the_drivers_start_when_main_knows_it(spark):
    """main() hands the reporter the driver JVM's start: the run summary's step seconds
    then include Spark's start-up, as the step's wall time on a cluster does."""
    from fruits_spark import progress

    jvm_start = progress.driver_started(spark)
    assert jvm_start is not None and jvm_start <= time.time()
    clock = iter([1000.0, 1004.0]).__next__
    reporter = progress.Reporter("featurize", None, clock=clock, started_at=990.0)
    assert reporter.started_at == 990.0  # not the reporter's own start, 1000
    late = progress.Reporter("reduce", None, clock=lambda: 1000.0, started_at=2000.0)
    assert late.started_at == 1000.0  # a clock skew never makes a negative time
    plain = progress.Reporter("reduce", None, clock=lambda: 1000.0)
    assert plain.started_at == 1000.0
