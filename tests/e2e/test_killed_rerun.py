"""A run killed half way, then run again, as a user would: ``airflow dags test`` in a
shell, SIGKILLed while featurize runs on the local Spark cluster, then the same command
again (it replaces the killed run of that logical date).

The batch's earlier publication must not notice the killed run at all, and the rerun
must replace it with the batch's complete outputs, leaving no staging and none of the
killed run's Spark processes behind (its cluster outlives it: the rerun's
``clear_leftovers`` reaps it). The earlier publication is written directly (as
``publish_batch`` leaves one): a whole first run would prove nothing more than
``test_local_run.py`` does, and costs a Spark cluster.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from dag_support import BUCKET, ROOT

from fruits.sample_batch import write_batch

pytestmark = [pytest.mark.usefixtures("airflow_db"), pytest.mark.slow]

DATE = "2026-11-25"
RUN = f"runs/batch={DATE}/"
CONF = {"weights": "random", "image_size": 64, "variance": 0.9}
RUN_TIMEOUT = 1500  # seconds for one whole local run on 2 busy cores


def dags_test(env: dict[str, str]) -> list[str]:
    """The command README gives for running (and rerunning) one batch."""
    airflow = str(Path(sys.executable).parent / "airflow")
    return [airflow, "dags", "test", "fruits_pipeline", DATE, "-c", json.dumps(CONF)]


def run_to_the_end(env: dict[str, str], log: Path) -> None:
    with log.open("wb") as out:
        done = subprocess.run(
            dags_test(env), env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT, start_new_session=True,
        )  # fmt: skip
    assert done.returncode == 0, log.read_text(errors="replace")[-6000:]


def snapshot(aws, prefix: str = RUN) -> dict[str, bytes]:
    return {key: aws.read(key) for key in aws.keys(prefix)}


def read_parquet(aws, prefix: str) -> pd.DataFrame:
    keys = [k for k in aws.keys(prefix) if k.endswith(".parquet")]
    assert keys, f"no Parquet under {prefix}"
    return pd.concat([pd.read_parquet(io.BytesIO(aws.read(k))) for k in keys], ignore_index=True)


def clusters(scratch: Path) -> dict[str, dict]:
    return {
        p.parent.name: json.loads(p.read_text()) for p in scratch.glob("clusters/*/cluster.json")
    }


def featurize_running(scratch: Path, known: set[str]) -> dict | None:
    """The new cluster once its featurize step is RUNNING (and its driver started)."""
    for cluster_id, info in clusters(scratch).items():
        folder = Path(info["dir"])
        if cluster_id in known or not (folder / "steps.json").exists():
            continue
        first = json.loads((folder / "steps.json").read_text())[0]
        assert first["name"].startswith("featurize"), first
        state = json.loads((folder / "steps" / first["id"] / "state.json").read_text())
        if (
            state["state"] == "RUNNING"
            and (folder / "steps" / first["id"] / "stderr").stat().st_size
        ):
            return info
    return None


def processes_of(info: dict) -> list[str]:
    """Live processes that belong to that cluster: its recorded ones, and any whose
    command line names its folder or its master (executors, spark-submit drivers)."""
    marks = (info["dir"], info["master_url"])
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if any(m in cmd for m in marks):
            found.append(f"{proc.info['pid']}: {cmd[:200]}")
    return found


def test_a_run_killed_during_featurize_changes_nothing_and_a_rerun_completes(
    fruits_env, aws, tmp_path, monkeypatch
):
    monkeypatch.setenv("FRUITS_COMPUTE", "local")
    batch = fruits_env / DATE
    images = write_batch(batch, per_label=2, labels=["Banana", "Kiwi"])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "spark_jobs")]),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    scratch = tmp_path / "scratch"

    # 1. the batch as an earlier run published it: its marker last, and objects the
    # rerun must replace or delete (a part file name Spark never reuses)
    aws.s3.create_bucket(Bucket=BUCKET)
    earlier = {
        RUN + "features/part-00000-earlier.snappy.parquet": b"earlier features",
        RUN + "report/report.json": json.dumps({"n_rows": 99}).encode(),
        RUN + "_SUCCESS": json.dumps({"run_id": "earlier", "run_key": "earlier"}).encode(),
    }
    for key, body in earlier.items():
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    published = snapshot(aws)
    assert published == earlier

    # 2. a second run of the batch, SIGKILLed (its whole process group) during featurize
    known = set(clusters(scratch))
    log = tmp_path / "killed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            dags_test(env), env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while (killed := featurize_running(scratch, known)) is None:
            assert proc.poll() is None, "ended before featurize ran:\n" + log.read_text()[-4000:]
            assert time.monotonic() < deadline, "featurize never started"
            time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert processes_of(killed), "the killed run's cluster should have outlived it"
    time.sleep(3)  # anything the killed run had in flight would land by now
    assert snapshot(aws) == published  # byte for byte, _SUCCESS included
    # featurize writes locally first: nothing staged yet but its live progress report
    assert all("/progress/" in k for k in aws.keys("runs/_staging/"))

    # 3. the same command again: it replaces the killed run and the earlier publication
    run_to_the_end(env, tmp_path / "rerun.log")
    marker = json.loads(aws.read(RUN + "_SUCCESS"))
    assert marker["run_id"] != "earlier"
    keys = aws.keys(RUN)
    assert RUN + "features/part-00000-earlier.snappy.parquet" not in keys  # stale: deleted
    assert {k[len(RUN) :].split("/")[0] for k in keys} == {
        "features", "pca", "rejected", "report", "progress", "_SUCCESS",
    }  # fmt: skip
    assert (marker["rows"], marker["rejected"]) == (len(images), 0)
    features = read_parquet(aws, RUN + "features/")
    raw = f"s3://{BUCKET}/raw/batch={DATE}/"
    assert sorted(features.path) == sorted(raw + p.relative_to(batch).as_posix() for p in images)
    assert features.path.is_unique  # each image once
    assert len(read_parquet(aws, RUN + "pca/")) == marker["rows"]
    assert json.loads(aws.read(RUN + "report/report.json"))["n_rows"] == len(images)
    assert aws.keys("runs/_staging/") == []
    # the killed run's cluster: reaped by the rerun, nothing of it still running
    info = clusters(scratch)[killed["id"]]
    assert info["state"] == "TERMINATED"
    assert processes_of(info) == []
    assert "abandoned clusters stopped: {'" + killed["id"] in (tmp_path / "rerun.log").read_text(
        errors="replace"
    )
    assert all(c["state"] == "TERMINATED" for c in clusters(scratch).values())
