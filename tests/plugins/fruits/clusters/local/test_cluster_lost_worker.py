"""Losing a worker mid-job is survived: a local standalone cluster with two workers, a
real ``spark-submit featurize.py`` (random weights) on it, and one worker's JVM killed by
its pid while the job runs. Spark re-runs the lost tasks on the other worker and the job
still writes a feature row for every image.

This is the Spark-level half of "one lost spot worker does not fail the run" (the ec2
backend launches workers with MinCount=1 and declares the cluster ready at a quorum):
once the job runs, a worker that goes away costs its tasks, not the run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from job_support import BIN, JOBS

from fruits.clusters.local import cluster as local_cluster
from fruits.clusters.local.sparkenv import spark_env
from fruits.dev.sample_batch import write_batch
from fruits.storage.code_bundle import build_zip

pytestmark = pytest.mark.slow

JOB_TIMEOUT = 1200  # seconds for the job on 2 busy cores, a lost worker included
KILL_DEADLINE = 600  # seconds for the second worker's executor to finish a task
LABELS = ["Banana", "Blueberry", "Kiwi", "Pêche"]
PER_LABEL = 60  # 240 images: many small tasks, so the job runs well past the kill
JOB_LINE = re.compile(r"featurize: (\d+) featurized, (\d+) rejected")


def finished_tasks(work: Path) -> int:
    """Tasks the worker's executors said they finished (their stderr in the work dir)."""
    return sum(
        path.read_text(errors="replace").count("Finished task")
        for path in work.glob("app-*/*/stderr")
    )


def test_a_worker_killed_mid_featurize_loses_no_image(tmp_path):
    images = tmp_path / "in"
    written = write_batch(images, per_label=PER_LABEL, labels=LABELS)
    py_files = build_zip(JOBS, tmp_path / "fruits_spark.zip")
    scratch = tmp_path / "scratch"
    cluster_id = local_cluster.start_cluster(scratch, cores=1, memory="1g", workers=2)
    info = local_cluster.read_cluster(scratch, cluster_id)
    folder = Path(info["dir"])
    victim = info["processes"]["worker-2"]
    assert "org.apache.spark.deploy.worker.Worker" in " ".join(
        psutil.Process(victim["pid"]).cmdline()
    )  # the recorded pid is the worker's JVM itself
    out = tmp_path / "out"
    log = tmp_path / "spark-submit.log"
    argv = [
        str(BIN / "spark-submit"), "--master", info["master_url"],
        "--properties-file", info["properties_file"],  # the cluster's secret
        "--conf", "spark.ui.enabled=false",
        "--conf", "spark.executor.memory=512m", "--conf", "spark.driver.memory=512m",
        "--conf", "spark.sql.files.maxPartitionBytes=300k",  # ~4 images a task: many tasks
        "--py-files", str(py_files), str(JOBS / "featurize.py"),
        "--input", str(images), "--output", str(out / "features"),
        "--rejected", str(out / "rejected"), "--weights", "random", "--image-size", "32",
    ]  # fmt: skip
    try:
        with log.open("wb") as sink:
            job = subprocess.Popen(
                argv, stdout=sink, stderr=subprocess.STDOUT,
                env=spark_env(),
                start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + KILL_DEADLINE
            while finished_tasks(folder / "work-2") < 1:  # the victim holds results now
                assert job.poll() is None, (
                    "the job ended before the second worker ran a task:\n"
                    + log.read_text(errors="replace")[-3000:]
                )
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                time.sleep(0.2)
            os.kill(victim["pid"], signal.SIGKILL)
            assert job.poll() is None  # killed mid-job, not after it
            killed_at = time.monotonic()
            code = job.wait(timeout=JOB_TIMEOUT)
        finally:
            if job.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job.pid, signal.SIGKILL)
                job.wait()
        text = log.read_text(errors="replace")
        assert code == 0, text[-5000:]
        # the driver saw the executor go and ran the lost work elsewhere
        assert re.search(r"Lost executor|ExecutorLostFailure|Executor .* removed", text), text[
            -5000:
        ]
        counts = JOB_LINE.search(text)
        assert counts and (int(counts[1]), int(counts[2])) == (len(written), 0), text[-3000:]
        paths = pq.read_table(out / "features", columns=["path"]).column("path").to_pylist()
        assert len(paths) == len(set(paths)) == len(written)  # each image once, none lost
        names = {"/".join(p.rsplit("/", 2)[-2:]) for p in paths}
        assert names == {f"{p.parent.name}/{p.name}" for p in written}
        # the surviving worker finished the job: it ran tasks after the kill
        assert finished_tasks(folder / "work") > 0
        print(f"lost worker: job finished {time.monotonic() - killed_at:.0f}s after the kill")
    finally:
        local_cluster.stop_cluster(scratch, cluster_id)
