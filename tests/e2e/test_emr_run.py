"""Whole runs of the ``emr`` backend with ``dag.test()`` against moto's server.

moto's EMR never finishes a step, so the ``emr_steps`` fixture plays the cluster:
it runs each step's real spark-submit on this host (its outputs published to the
step's s3:// URIs) or fails the first one (with a stderr.gz in the LogUri, as EMR
does)."""

from __future__ import annotations

import gzip
import json
import re
import zipfile
from io import BytesIO

import pytest
from dag_support import (
    BUCKET,
    STALLED_AT,
    STEP_ERROR,
    assert_real_outputs,
    logical,
    read_parquet,
    task_states,
    write_test_batch,
)

from fruits.dev.sample_batch import write_batch
from fruits_spark.rules import is_image_path

pytestmark = pytest.mark.usefixtures("airflow_db")

DATE = "2026-11-24"
CONF = {"weights": "random", "image_size": 64}


@pytest.fixture
def batch(fruits_env):
    return write_test_batch(fruits_env / DATE, ["Banana", "Pêche"], 2, bad_label="Banana")


def run(dag, date=DATE, conf=CONF):
    return dag.test(logical_date=logical(date), run_conf=conf)


def test_steps_completed_run_succeeds_and_cluster_is_terminated(
    load_dag, batch, aws, emr_steps, capfd
):
    emr_steps("complete")
    dag_run = run(load_dag("emr"))

    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    assert set(states.values()) == {"success"}
    (cluster,) = aws.clusters()
    assert cluster["Status"]["State"] == "TERMINATED"

    # the batch went to raw/ packed: every image, bad ones too (the job decides what they
    # are), not the hidden and non-image files the job would skip
    packed = aws.packed(f"raw/batch={DATE}/")
    folder = batch.folder
    local = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    assert sorted(packed) == sorted(name for name in local if is_image_path(name))
    assert all(packed[name] == (folder / name).read_bytes() for name in packed)

    # the cluster: EMR 7, Spark, the bootstrap and job code of this run's code version
    described = aws.emr.describe_cluster(ClusterId=cluster["Id"])["Cluster"]
    assert described["ReleaseLabel"].startswith("emr-7.")
    assert {"Key": "project", "Value": "fruits-pipeline"} in described["Tags"]
    (bootstrap,) = aws.emr.list_bootstrap_actions(ClusterId=cluster["Id"])["BootstrapActions"]
    code_prefix = bootstrap["ScriptPath"].removesuffix("bootstrap.sh")
    assert code_prefix.startswith(f"s3://{BUCKET}/code/")
    code_keys = set(aws.keys(code_prefix.removeprefix(f"s3://{BUCKET}/")))
    assert {code_prefix.removeprefix(f"s3://{BUCKET}/") + name for name in (
        "fruits_spark.zip", "featurize.py", "reduce.py", "bootstrap.sh", "requirements.txt"
    )} == code_keys  # fmt: skip
    zipped = aws.read(code_prefix.removeprefix(f"s3://{BUCKET}/") + "fruits_spark.zip")
    assert "fruits_spark/inference/images.py" in zipfile.ZipFile(BytesIO(zipped)).namelist()

    # the steps: featurize then reduce, reading and writing s3:// directly
    steps = aws.emr.list_steps(ClusterId=cluster["Id"])["Steps"][::-1]  # oldest first
    assert [s["Name"] for s in steps] == [f"featurize batch={DATE}", f"reduce batch={DATE}"]
    featurize = steps[0]["Config"]["Args"]
    assert featurize[:5] == [
        "spark-submit", "--deploy-mode", "cluster", "--py-files", code_prefix + "fruits_spark.zip"
    ]  # fmt: skip
    assert featurize[featurize.index("--input") + 1] == f"s3://{BUCKET}/raw/batch={DATE}/"
    assert featurize[featurize.index("--weights") + 1] == "random"
    assert featurize[featurize.index("--image-size") + 1] == "64"
    assert all(s["ActionOnFailure"] == "CANCEL_AND_WAIT" for s in steps)

    # the steps ran for real: the published outputs are the batch's images and bad files
    report = assert_real_outputs(aws, f"runs/batch={DATE}/", batch, DATE)

    # the summary read report.json and the rejected Parquet back from S3
    out = capfd.readouterr().out
    assert (
        f"batch {DATE}: {len(batch.good)} images featurized (2 labels), {len(batch.bad)} rejected"
    ) in out
    variance = report["cumulative_variance"][-1]
    assert variance >= 0.95  # the default --variance
    assert f"-> k={report['k']} components, explained variance {variance:.4f}" in out
    # the steps' progress reports, read from S3 as on a real cluster, give the summary
    # each step's wall time and featurize's rate
    assert re.search(
        r"steps: featurize \d+ (s|min), reduce \d+ (s|min); featurize [\d.]+ img/s", out
    )
    marker = json.loads(aws.read(f"runs/batch={DATE}/_SUCCESS"))
    assert set(marker["step_seconds"]) == {"featurize", "reduce"}
    assert min(marker["step_seconds"].values()) > 0 and marker["featurize_rate"] > 0
    progress = json.loads(aws.read(f"runs/batch={DATE}/progress/featurize.json"))
    assert progress["finished"] and progress["done"] == progress["total"]


def test_failed_step_fails_the_run_terminates_the_cluster_and_shows_stderr(
    load_dag, batch, aws, emr_steps, capfd
):
    emr_steps("fail")
    dag_run = run(load_dag("emr"))

    states = task_states(dag_run)
    assert str(dag_run.state) == "failed"
    assert states["wait_for_step"] == "failed"
    assert states["remove_cluster"] == "success"  # the teardown ran...
    assert states["summarize_run"] == "upstream_failed"  # ...and the run still failed
    (cluster,) = aws.clusters()
    assert cluster["Status"]["State"] == "TERMINATED"
    steps = aws.emr.list_steps(ClusterId=cluster["Id"])["Steps"][::-1]
    assert [s["Status"]["State"] for s in steps] == ["FAILED", "CANCELLED"]
    out = capfd.readouterr().out
    log = out[out.index("Waiting up to") :]  # the sensor's log, from its first line
    assert f"step {steps[0]['Id']} (featurize batch={DATE}) is FAILED" in log
    assert STEP_ERROR in log  # the step's stderr.gz, fetched from the LogUri
    assert "INFO SparkContext" not in log  # log4j noise dropped from the tail


def test_a_step_that_fails_for_real_fails_the_run_with_its_own_stderr(
    load_dag, fruits_env, aws, emr_steps, capfd
):
    """A batch of two images, one of them not an image: featurize runs and rejects it,
    reduce's real spark-submit exits non-zero (a PCA needs two rows); its own logs go
    to the LogUri, and its stderr's tail fails the run. (A one-image batch would stop at
    find_batch.)"""
    (kiwi,) = write_batch(fruits_env / DATE, per_label=1, labels=["Kiwi"])
    kiwi.with_name("broken.jpg").write_bytes(b"not a jpeg")
    emr_steps("complete")
    dag_run = run(load_dag("emr"))

    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert (states["wait_for_step"], states["remove_cluster"]) == ("failed", "success")
    (cluster,) = aws.clusters()
    steps = aws.emr.list_steps(ClusterId=cluster["Id"])["Steps"][::-1]
    assert [s["Status"]["State"] for s in steps] == ["COMPLETED", "FAILED"]
    logs = f"logs/emr/{cluster['Id']}/steps/{steps[1]['Id']}/"
    out = capfd.readouterr().out
    log = out[out.index("Waiting up to") :]
    assert f"step {steps[1]['Id']} (reduce batch={DATE}) is FAILED" in log
    assert f"--- s3://{BUCKET}/{logs}stderr.gz (tail) ---" in log
    assert "SparkContext" in gzip.decompress(aws.read(logs + "stderr.gz")).decode()
    # PySpark's driver merges the job's stderr into spark-submit's stdout
    stdout = gzip.decompress(aws.read(logs + "stdout.gz")).decode()
    assert "error: --input " in stdout and "need at least 2 rows to fit a PCA, got 1" in stdout
    assert aws.keys("runs/batch=") == []  # nothing published


def test_a_stalled_step_fails_the_run_early_and_the_cluster_is_removed(
    load_dag, batch, aws, emr_steps, capfd, monkeypatch
):
    """featurize RUNNING, its progress.json (read from moto's S3) frozen for an hour: the
    sensor fails at its first look with the stall message, not after the timeout."""
    monkeypatch.setenv("FRUITS_STALL_MINUTES", "1")
    emr_steps("stall")
    dag_run = run(load_dag("emr"))

    states = task_states(dag_run)
    assert str(dag_run.state) == "failed"
    assert states["wait_for_step"] == "failed"
    assert states["remove_cluster"] == "success"
    (cluster,) = aws.clusters()
    assert cluster["Status"]["State"] == "TERMINATED"
    out = capfd.readouterr().out
    log = out[out.index("Waiting up to") :]
    assert "featurize stalled: no progress for " in log
    assert f"{STALLED_AT:,} / 90,000 images (46%)" in log
    assert "(limit 60 s, FRUITS_STALL_MINUTES)" in log
    assert aws.keys("runs/batch=") == []  # nothing published


@pytest.mark.parametrize(
    "weights",
    [f"s3://{BUCKET}/weights/missing.weights.h5", "/nonexistent/model.weights.h5", "imagenet"],
)
def test_unreadable_weights_fail_the_run_before_any_cluster(
    load_dag, batch, aws, weights, capfd, monkeypatch, tmp_path
):
    """What the form's schema cannot check: that the weights file can be read."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-cache"))
    dag_run = run(load_dag("emr"), conf={**CONF, "weights": weights})
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed"
    assert states["validate_params"] == "failed"
    assert states["create_job_flow"] == "upstream_failed"
    assert aws.clusters() == []
    assert "param 'weights'" in capfd.readouterr().out


def test_imagenet_weights_come_from_the_staged_copy_not_the_workers_cache(
    load_dag, batch, aws, emr_steps, staged_weights
):
    """A fresh worker (empty Keras cache) runs imagenet on EMR: the steps read the copy
    ``make stage-weights`` put in models/, and no weights travel with the code."""
    uri = staged_weights("mobilenetv2")
    emr_steps("complete")
    dag_run = run(load_dag("emr"), conf={**CONF, "weights": "imagenet"})
    assert str(dag_run.state) == "success", task_states(dag_run)
    (cluster,) = aws.clusters()
    featurize = aws.emr.list_steps(ClusterId=cluster["Id"])["Steps"][-1]["Config"]["Args"]
    assert featurize[featurize.index("--weights") + 1] == uri
    assert [k for k in aws.keys("code/") if "/weights/" in k] == []


def test_params_outside_the_form_schema_are_refused_at_trigger(load_dag, batch, aws):
    from airflow.sdk.exceptions import ParamValidationError

    dag = load_dag("emr")
    for conf, name in (
        ({"variance": 1.5}, "variance"),
        ({"variance": 0}, "variance"),
        ({"model": "resnet50"}, "model"),
        ({"batch_date": "2026-02-30"}, "batch_date"),
        ({"image_size": 8}, "image_size"),
        ({"weights": "imagenet21k"}, "weights"),
    ):
        with pytest.raises(ParamValidationError, match=name):
            run(dag, conf={**CONF, **conf})
    assert aws.clusters() == []


def test_missing_batch_ends_the_run_early_without_a_cluster(
    load_dag, fruits_env, aws, staged_wheels, staged_model
):
    staged_model()  # the converted model (and its manifest) validate_params looks for
    wheels = set(_staged(staged_wheels, aws)) | set(aws.keys("models/"))
    (fruits_env / "2026-11-23").mkdir()  # an empty batch folder
    for date in ("2026-11-23", "2026-11-22"):  # empty, missing
        dag_run = run(load_dag("emr"), date=date)
        states = task_states(dag_run)
        assert str(dag_run.state) == "success", states
        assert states["find_batch"] == "success"
        skipped = {t for t, s in states.items() if s == "skipped"}
        assert skipped == set(states) - {"validate_params", "find_batch"}
    assert aws.clusters() == []
    assert set(aws.keys()) == wheels  # nothing uploaded beside the staged wheels and model


def _staged(staged_wheels, aws) -> list[str]:
    """The keys of the nodes' wheels, staged (the pre-flight of a cloud run needs them)."""
    staged_wheels()
    return aws.keys("wheels/")


def test_a_run_given_an_s3_source_takes_its_latest_batch_and_skips_a_missing_one(
    load_dag, fruits_env, aws, emr_steps, tmp_path
):
    """The ``source`` parameter points one run at another bucket: a manual run takes the
    newest date there, copies it server-side; a date missing there ends the run early."""
    emr_steps("complete")
    aws.s3.create_bucket(Bucket="landing-zone")
    for i, date in enumerate(("2026-11-02", "2026-11-21")):
        # two images: reduce fits a PCA, which needs two rows
        for image in write_batch(tmp_path / date, per_label=2, labels=["Lime"], seed=i):
            aws.s3.put_object(Bucket="landing-zone", Key=f"in/{date}/Lime/{image.name}",
                              Body=image.read_bytes())  # fmt: skip
    conf = {**CONF, "source": "s3://landing-zone/in"}
    dag_run = load_dag("emr").test(logical_date=None, run_conf=conf)
    assert str(dag_run.state) == "success", task_states(dag_run)
    copied = ["raw/batch=2026-11-21/Lime/0_100.jpg", "raw/batch=2026-11-21/Lime/1_100.jpg"]
    assert sorted(aws.keys("raw/")) == copied
    rows = read_parquet(aws, "runs/batch=2026-11-21/features/")  # featurize read them
    assert sorted(r["path"] for r in rows) == [f"s3://{BUCKET}/{key}" for key in copied]
    assert len(aws.clusters()) == 1

    dag_run = load_dag("emr").test(logical_date=logical("2026-11-22"), run_conf=conf)
    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    assert states["upload_batch"] == "skipped" and states["create_job_flow"] == "skipped"
    assert len(aws.clusters()) == 1  # no second cluster


def test_a_manual_run_without_logical_date_takes_the_latest_batch(
    load_dag, fruits_env, aws, emr_steps
):
    emr_steps("complete")
    for date in ("2026-11-02", "2026-11-21", "2026-11-09"):
        write_batch(fruits_env / date, per_label=2, labels=["Lime"])  # a PCA needs 2 rows
    dag_run = load_dag("emr").test(logical_date=None, run_conf=CONF)
    assert str(dag_run.state) == "success", task_states(dag_run)
    assert dag_run.logical_date is None
    assert {k.split("/")[1] for k in aws.keys("raw/")} == {"batch=2026-11-21"}
    report = json.loads(aws.read("runs/batch=2026-11-21/report/report.json"))
    assert report["labels"] == {"Lime": 2}  # that batch's images, featurized for real


def test_a_backfill_over_three_dates_runs_three_batches_one_at_a_time(
    load_dag, fruits_env, aws, emr_steps
):
    """What ``airflow backfill create --from-date 2026-11-21 --to-date 2026-11-23`` runs:
    one run per logical date, each on its own batch, each with its own cluster, one
    after the other (``max_active_runs=1``: the scheduler never overlaps them)."""
    emr_steps("complete")
    dag = load_dag("emr")
    assert dag.max_active_runs == 1
    dates = ("2026-11-21", "2026-11-22", "2026-11-23")
    run_ids = {}
    for i, date in enumerate(dates):
        write_batch(fruits_env / date, per_label=2, labels=["Kiwi"], seed=i)  # PCA: 2 rows
        dag_run = run(dag, date=date, conf=CONF)
        assert str(dag_run.state) == "success", task_states(dag_run)
        run_ids[date] = dag_run.run_id
    clusters = aws.clusters()
    assert len(clusters) == 3 and {c["Status"]["State"] for c in clusters} == {"TERMINATED"}
    # one at a time: each cluster was created after the previous one had ended
    timelines = sorted(
        (c["Status"]["Timeline"] for c in clusters), key=lambda t: t["CreationDateTime"]
    )
    for before, after in zip(timelines, timelines[1:], strict=False):
        assert before["EndDateTime"] <= after["CreationDateTime"]
    for date in dates:
        assert sorted(aws.packed(f"raw/batch={date}/")) == ["Kiwi/0_100.jpg", "Kiwi/1_100.jpg"]
        report = json.loads(aws.read(f"runs/batch={date}/report/report.json"))
        assert report["n_rows"] == 2  # the batch's images, featurized for real
        marker = json.loads(aws.read(f"runs/batch={date}/_SUCCESS"))
        assert (marker["batch"], marker["run_id"]) == (date, run_ids[date])
    # three distinct batches: their raw images differ, and each run read its own
    images = {aws.packed(f"raw/batch={d}/")["Kiwi/0_100.jpg"] for d in dates}
    assert len(images) == 3
    inputs = sorted(
        step["Config"]["Args"][step["Config"]["Args"].index("--input") + 1]
        for c in clusters
        for step in aws.emr.list_steps(ClusterId=c["Id"])["Steps"]
        if step["Name"].startswith("featurize")
    )
    assert inputs == [f"s3://{BUCKET}/raw/batch={d}/" for d in dates]
