"""Whole runs of the ``local`` backend with ``dag.test()``: a real Spark standalone
cluster on 127.0.0.1, the real jobs (random weights, 64 and 128 px images), moto's S3."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from dag_support import BUCKET, logical, task_states

from fruits.sample_batch import write_bad_files, write_batch, write_odd_images

pytestmark = [pytest.mark.usefixtures("airflow_db"), pytest.mark.slow]

DATE = "2026-11-24"
LABELS = ["Banana", "Blueberry", "Pêche"]
CONF = {"weights": "random", "image_size": 64, "variance": 0.9}


def clusters(scratch: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in scratch.glob("clusters/*/cluster.json")]


def assert_cluster_gone(scratch: Path) -> dict:
    import psutil

    (info,) = clusters(scratch)
    assert info["state"] == "TERMINATED"
    for role, proc in info["processes"].items():
        assert not psutil.pid_exists(proc["pid"]) or (
            psutil.Process(proc["pid"]).create_time() != proc["create_time"]
        ), f"{role} (pid {proc['pid']}) still runs"
    assert not (Path(info["dir"]) / "s3").exists()  # staged data deleted, logs kept
    assert (Path(info["dir"]) / "logs" / "master.log").exists()
    return info


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


def read_parquet(aws, prefix: str) -> pd.DataFrame:
    keys = [k for k in aws.keys(prefix) if k.endswith(".parquet")]
    assert keys, f"no Parquet under {prefix}"
    return pd.concat([pd.read_parquet(io.BytesIO(aws.read(k))) for k in keys], ignore_index=True)


def progress_counts(out: str) -> list[int]:
    """The images-done figures of wait_for_step's featurize lines, in log order."""
    found = re.findall(r"featurize: ([\d,]+) / ([\d,]+) images \(\d+%\)", out)
    return [int(done.replace(",", "")) for done, _ in found]


def test_local_run_end_to_end(load_dag, fruits_env, aws, tmp_path, capfd, monkeypatch):
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
    dag_run = load_dag("local").test(
        logical_date=logical(DATE), run_conf={**CONF, "image_size": 128}
    )

    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    assert set(states.values()) == {"success"}
    run = f"runs/batch={DATE}/"
    features = read_parquet(aws, run + "features/")
    assert len(features) == len(good)
    assert sorted(features.label.unique()) == sorted(labels)
    assert {len(v) for v in features.features} == {1280}  # MobileNetV2, pooled
    # images are named as on EMR (s3://), not as the staged copies the jobs read
    raw = f"s3://{BUCKET}/raw/batch={DATE}/"
    assert all(p.startswith(raw) for p in features.path), features.path[0]
    rejected = read_parquet(aws, run + "rejected/")
    assert sorted(Path(p).name for p in rejected.path) == sorted(Path(p).name for p in bad)
    report = json.loads(aws.read(run + "report/report.json"))
    assert report["n_rows"] == len(good) and report["weights"] == "random"
    assert report["n_rejected"] == len(bad)  # reduce read featurize's rejected Parquet
    assert all(r["path"].startswith(raw) for r in report["rejected"])
    assert "/scratch/" not in json.dumps(report)
    assert report["model"] == "mobilenetv2" and report["cumulative_variance"][-1] >= 0.9
    pca = read_parquet(aws, run + "pca/")
    assert len(pca) == len(good) and {len(v) for v in pca.pca} == {report["k"]}
    assert sorted(pca.path) == sorted(features.path)
    assert f"{run}report/cumulative_variance.png" in aws.keys(run + "report/")
    assert not [k for k in aws.keys(run) if k.rsplit("/", 1)[-1].startswith(".")]  # no .crc

    info = assert_cluster_gone(tmp_path / "scratch")
    # the steps ran the job code uploaded to S3 (staged from code/<version>/), on the master
    steps = json.loads((Path(info["dir"]) / "steps.json").read_text())
    featurize = steps[0]["argv"]
    assert featurize[featurize.index("--master") + 1] == info["master_url"]
    assert f"/s3/{BUCKET}/code/" in featurize[featurize.index("--py-files") + 1]
    out = capfd.readouterr().out
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
    assert event["pca"] == f"s3://{BUCKET}/{run}pca/"
    # published: the batch's marker, written last, names the run; its staging is gone
    assert json.loads(aws.read(run + "_SUCCESS"))["run_id"] == dag_run.run_id
    assert aws.keys("runs/_staging/") == []
    assert "_staging" not in json.dumps(report)  # report.json names the published outputs
    # issue 16: wait_for_step logged featurize's progress, read from S3 while it ran,
    # images done moving up during the run, then reduce's pass; the summary has the rate
    counts = progress_counts(out)
    total = len(good) + len(bad)  # every image file listed; done when all went through
    assert counts == sorted(counts) and counts[-1] <= total, counts
    assert len(set(counts)) >= 3 and any(0 < c < total for c in counts), counts
    assert re.search(r"reduce: (pass [12]/2: \w+|report), \d+ s", out)
    marker = json.loads(aws.read(run + "_SUCCESS"))
    assert marker["featurize_rate"] > 0 and set(marker["step_seconds"]) == {"featurize", "reduce"}
    assert re.search(r"steps: featurize \d+ s, reduce \d+ s; featurize", out)
    # (a rerun replacing these outputs: test_killed_rerun.py, after a killed run)


def test_local_failed_step_fails_the_run_and_stops_the_cluster(
    load_dag, fruits_env, aws, tmp_path, capfd
):
    write_batch(fruits_env / DATE, per_label=1, labels=["Kiwi"])
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
    info = assert_cluster_gone(tmp_path / "scratch")
    step_states = [
        json.loads(p.read_text())["state"]
        for p in sorted(Path(info["dir"]).glob("steps/*/state.json"))
    ]
    assert sorted(step_states) == ["CANCELLED", "FAILED"]
    out = capfd.readouterr().out
    # the failed step's own error, from its stderr, in the task's log
    assert "FAILED (exit status 2)" in out
    assert "error: --weights " in out and "do not fit mobilenetv2@64" in out
