"""Whole runs of the ``local`` backend: a real Spark standalone cluster on 127.0.0.1, the
real jobs (random weights, 64 and 128 px images), moto's S3.

The whole run is the rerun of a batch after a crash, as a user would do it:
``airflow dags test`` in a shell, SIGKILLed while featurize runs, then the same command
again (it replaces the killed run of that logical date). The batch's earlier publication
must not notice the killed run at all; the rerun must publish the complete outputs of a
messy batch, leaving no staging and none of the killed run's Spark processes behind (its
cluster outlives it: the rerun's ``clear_leftovers`` reaps it). One whole run proves
both, since each costs a Spark cluster and minutes on 2 cores; the earlier publication
is written directly, as ``publish_batch`` leaves one. A failed step runs in process
(``dag.test()``).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from dag_support import BUCKET, ROOT, logical, task_states

from fruits.clusters.local.steps import DRIVER_JAVA_OPTIONS
from fruits.dev.sample_batch import write_bad_files, write_batch, write_odd_images

pytestmark = [pytest.mark.usefixtures("airflow_db"), pytest.mark.slow]

DATE = "2026-11-24"
RUN = f"runs/batch={DATE}/"
LABELS = ["Banana", "Blueberry", "Pêche"]
CONF = {"weights": "random", "image_size": 64, "variance": 0.9}
RUN_TIMEOUT = 1500  # seconds for one whole local run on 2 busy cores


def clusters(scratch: Path) -> dict[str, dict]:
    return {
        p.parent.name: json.loads(p.read_text()) for p in scratch.glob("clusters/*/cluster.json")
    }


def assert_cluster_gone(info: dict) -> None:
    assert info["state"] == "TERMINATED"
    for role, proc in info["processes"].items():
        assert not psutil.pid_exists(proc["pid"]) or (
            psutil.Process(proc["pid"]).create_time() != proc["create_time"]
        ), f"{role} (pid {proc['pid']}) still runs"
    assert not (Path(info["dir"]) / "s3").exists()  # staged data deleted, logs kept
    assert (Path(info["dir"]) / "logs" / "master.log").exists()


def asset_events(name: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == name)
            .order_by(AssetEvent.id)
        )
        return [dict(extra) for extra in session.scalars(query)]


def run_ids(date: str) -> list[str]:
    """The DAG's runs of that logical date, as the database holds them."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(DagRun.run_id).where(
            DagRun.dag_id == "fruits_pipeline", DagRun.logical_date == logical(date)
        )
        return list(session.scalars(query))


def read_parquet(aws, prefix: str) -> pd.DataFrame:
    keys = [k for k in aws.keys(prefix) if k.endswith(".parquet")]
    assert keys, f"no Parquet under {prefix}"
    return pd.concat([pd.read_parquet(io.BytesIO(aws.read(k))) for k in keys], ignore_index=True)


def snapshot(aws, prefix: str = RUN) -> dict[str, bytes]:
    return {key: aws.read(key) for key in aws.keys(prefix)}


def progress_counts(out: str) -> list[int]:
    """The images-done figures of wait_for_step's featurize lines, in log order."""
    found = re.findall(r"featurize: ([\d,]+) / ([\d,]+) images \(\d+%\)", out)
    return [int(done.replace(",", "")) for done, _ in found]


# ---------------------------------------------------------------- the CLI, as a user runs it


def cli_env() -> dict[str, str]:
    """This test's environment (its FRUITS_* settings, Airflow home, moto) for the CLI."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "spark_jobs")]),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def dags_test(conf: dict) -> list[str]:
    """The command README gives for running (and rerunning) one batch."""
    airflow = str(Path(sys.executable).parent / "airflow")
    return [airflow, "dags", "test", "fruits_pipeline", DATE, "-c", json.dumps(conf)]


def run_to_the_end(env: dict[str, str], conf: dict, log: Path) -> str:
    with log.open("wb") as out:
        done = subprocess.run(
            dags_test(conf), env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT, start_new_session=True,
        )  # fmt: skip
    text = log.read_text(errors="replace")
    assert done.returncode == 0, text[-6000:]
    return text


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


def kill_during_featurize(env: dict[str, str], conf: dict, log: Path, scratch: Path) -> dict:
    """Start the CLI run, SIGKILL its whole process group once featurize runs; its cluster."""
    known = set(clusters(scratch))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            dags_test(conf), env=env, stdout=out, stderr=subprocess.STDOUT,
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
    return killed


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


# ---------------------------------------------------------------- the tests


def test_a_killed_run_changes_nothing_and_the_rerun_publishes_the_whole_batch(
    fruits_env, aws, tmp_path, monkeypatch
):
    monkeypatch.setenv("FRUITS_COMPUTE", "local")
    monkeypatch.setenv("FRUITS_PROGRESS_SECONDS", "1")  # the jobs' reports: each second
    batch = fruits_env / DATE
    # Issue 6's messy batch: good images; truncated, empty, text-as-.jpg and bomb files,
    # hidden files (write_bad_files); grayscale, RGBA, palette, CMYK, a 5000x4000 photo
    # and an odd size in a label with a space (write_odd_images); a nested, non-ASCII label.
    # 150 per label: a featurize long enough for several looks at its progress
    good = write_batch(batch, per_label=150, labels=LABELS)
    bad = write_bad_files(batch, label="Banana")
    odd = write_odd_images(batch)
    nested = write_batch(batch / "Apples", per_label=1, labels=["Pomme Golden ü"])
    good = [*good, *odd, *nested]
    labels = [*LABELS, "Odd Formats", "Pomme Golden ü"]
    # 128 px: a featurize of seconds even on a quiet, fast machine (LiteRT does 64 px
    # images at over 1,000 per second here), so that several pokes see it running
    conf = {**CONF, "image_size": 128}
    env, scratch = cli_env(), tmp_path / "scratch"

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
    killed = kill_during_featurize(env, conf, tmp_path / "killed.log", scratch)
    assert processes_of(killed), "the killed run's cluster should have outlived it"
    time.sleep(3)  # anything the killed run had in flight would land by now
    assert snapshot(aws) == published  # byte for byte, _SUCCESS included
    # featurize writes locally first: nothing staged yet but its live progress report
    assert all("/progress/" in k for k in aws.keys("runs/_staging/"))

    # 3. the same command again: the whole batch, replacing the earlier publication
    out = run_to_the_end(env, conf, tmp_path / "rerun.log")
    features = read_parquet(aws, RUN + "features/")
    assert len(features) == len(good) and features.path.is_unique  # each image once
    assert sorted(features.label.unique()) == sorted(labels)
    assert sorted(Path(p).name for p in features.path) == sorted(Path(p).name for p in good)
    assert {len(v) for v in features.features} == {1280}  # MobileNetV2, pooled
    # images are named as on EMR (s3://), not as the staged copies the jobs read
    raw = f"s3://{BUCKET}/raw/batch={DATE}/"
    assert all(p.startswith(raw) for p in features.path), features.path[0]
    rejected = read_parquet(aws, RUN + "rejected/")
    assert sorted(Path(p).name for p in rejected.path) == sorted(Path(p).name for p in bad)
    report = json.loads(aws.read(RUN + "report/report.json"))
    assert report["n_rows"] == len(good) and report["weights"] == "random"
    assert report["n_rejected"] == len(bad)  # reduce read featurize's rejected Parquet
    assert all(r["path"].startswith(raw) for r in report["rejected"])
    assert "/scratch/" not in json.dumps(report)
    assert report["model"] == "mobilenetv2" and report["cumulative_variance"][-1] >= 0.9
    pca = read_parquet(aws, RUN + "pca/")
    assert len(pca) == len(good) and {len(v) for v in pca.pca} == {report["k"]}
    assert sorted(pca.path) == sorted(features.path)
    assert f"{RUN}report/cumulative_variance.png" in aws.keys(RUN + "report/")
    keys = aws.keys(RUN)
    assert not [k for k in keys if k.rsplit("/", 1)[-1].startswith(".")]  # no .crc
    assert RUN + "features/part-00000-earlier.snappy.parquet" not in keys  # stale: deleted
    assert {k[len(RUN) :].split("/")[0] for k in keys} == {
        "features", "pca", "rejected", "report", "progress", "_SUCCESS",
    }  # fmt: skip
    # published: the marker, written last, names the run that replaced the killed one
    marker = json.loads(aws.read(RUN + "_SUCCESS"))
    assert [marker["run_id"]] == run_ids(DATE)
    assert (marker["rows"], marker["rejected"]) == (len(good), len(bad))
    assert aws.keys("runs/_staging/") == []  # the killed run's progress report too
    assert "_staging" not in json.dumps(report)  # report.json names the published outputs

    # the rerun's cluster: gone; its steps ran the job code uploaded to S3 (staged from
    # code/<version>/), on its master
    found = clusters(scratch)
    (info,) = [c for cid, c in found.items() if cid != killed["id"]]
    assert_cluster_gone(info)
    steps = json.loads((Path(info["dir"]) / "steps.json").read_text())
    featurize = steps[0]["argv"]
    assert featurize[featurize.index("--master") + 1] == info["master_url"]
    assert f"/s3/{BUCKET}/code/" in featurize[featurize.index("--py-files") + 1]
    assert "spark.driver.memory=480m" in featurize  # FRUITS_LOCAL_DRIVER_MEMORY
    assert f"spark.driver.extraJavaOptions={DRIVER_JAVA_OPTIONS}" in featurize  # bounded RSS
    # the killed run's cluster: reaped by the rerun, nothing of it still running
    assert found[killed["id"]]["state"] == "TERMINATED"
    assert processes_of(found[killed["id"]]) == []
    assert "abandoned clusters stopped: {'" + killed["id"] in out

    # the task logs: the summary, the report's separation, featurize's live progress
    assert (
        f"batch {DATE}: {len(good)} images featurized ({len(labels)} labels), {len(bad)} rejected"
    ) in out
    assert f"-> k={report['k']} components" in out
    sep = report["separation"]  # the published report says how well labels separate
    assert (sep["sample_rows"], sep["of_rows"]) == (len(good), len(good))
    assert f"label separation on {len(good)} of {len(good)} rows: 1-NN accuracy" in out
    # downstream DAGs scheduled on the PCA asset get the batch and where its outputs are
    event = asset_events("fruits_pca")[-1]
    assert event["batch"] == DATE and event["k"] == report["k"]
    assert event["pca"] == f"s3://{BUCKET}/{RUN}pca/"
    # issue 16: wait_for_step logged featurize's progress, read from S3 while it ran,
    # images done moving up during the run, then reduce's pass; the marker has the rate
    counts = progress_counts(out)
    total = len(good) + len(bad)  # every image file listed; done when all went through
    assert counts == sorted(counts) and counts[-1] <= total, counts
    assert len(set(counts)) >= 3 and any(0 < c < total for c in counts), counts
    assert re.search(r"reduce: (pass [12]/2: \w+|report), \d+ (s|min)", out)
    assert marker["featurize_rate"] > 0 and set(marker["step_seconds"]) == {"featurize", "reduce"}
    # a step's seconds count from its driver's start: over 90 s on a busy host, in minutes
    assert re.search(r"steps: featurize \d+ (s|min), reduce \d+ (s|min); featurize", out)


def test_local_failed_step_fails_the_run_and_stops_the_cluster(
    load_dag, fruits_env, aws, tmp_path, capfd
):
    write_batch(fruits_env / DATE, per_label=2, labels=["Kiwi"])  # one would stop find_batch
    aws.s3.create_bucket(Bucket=BUCKET)
    broken = f"s3://{BUCKET}/weights/broken.weights.h5"  # readable, but not weights
    aws.s3.put_object(Bucket=BUCKET, Key="weights/broken.weights.h5", Body=b"not hdf5")

    events_before = len(asset_events("fruits_pca"))
    dag_run = load_dag("local").test(
        logical_date=logical(DATE), run_conf={**CONF, "weights": broken}
    )

    states = task_states(dag_run)
    assert str(dag_run.state) == "failed"
    assert states["wait_for_step"] == "failed"
    assert states["remove_cluster"] == "success"
    assert states["publish_batch"] == "upstream_failed"
    assert aws.keys("runs/") == []  # nothing published, nothing even staged
    assert len(asset_events("fruits_pca")) == events_before  # nothing announced
    (info,) = clusters(tmp_path / "scratch").values()
    assert_cluster_gone(info)
    step_states = [
        json.loads(p.read_text())["state"]
        for p in sorted(Path(info["dir"]).glob("steps/*/state.json"))
    ]
    assert sorted(step_states) == ["CANCELLED", "FAILED"]
    out = capfd.readouterr().out
    # the failed step's own error, from its stderr, in the task's log
    assert "FAILED (exit status 2)" in out
    assert "error: --weights " in out and "do not fit mobilenetv2@64" in out
