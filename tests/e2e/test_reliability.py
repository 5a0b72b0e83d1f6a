"""Faults and reruns of whole ``emr`` runs (``dag.test()`` on moto's server).

The rule they check (``fruits.storage.publish``): the steps write the run's staging prefix
``runs/_staging/batch=<date>/<run key>/``; only ``publish_batch``, after both steps
succeeded and their outputs checked out, switches them in as ``runs/batch=<date>/`` and
writes ``_SUCCESS`` last. So any fault -- an S3 error on upload, a step over its
timeout, a cluster that does not start, a refused cluster request, a failed featurize
or reduce step, outputs missing -- leaves the batch's earlier outputs *and* their
marker exactly as they were; the next run of the batch clears the staging left behind.
"""

from __future__ import annotations

import json
import time

import pytest
from dag_support import (
    BOOTSTRAP_FAILURE,
    BUCKET,
    EARLIER_BATCH,
    STEP_ERROR,
    assert_real_outputs,
    emr_clusters,
    failed_at,
    logical,
    snapshot,
    task_states,
    write_test_batch,
)

pytestmark = pytest.mark.usefixtures("airflow_db")

DATE = EARLIER_BATCH
RUN = f"runs/batch={DATE}/"
MARKER = RUN + "_SUCCESS"
STAGING = f"runs/_staging/batch={DATE}/"
CONF = {"weights": "random", "image_size": 64}


@pytest.fixture
def batch(fruits_env):
    return write_test_batch(fruits_env / DATE, ["Banana", "Kiwi"], 1, bad_label=None)


def run(dag, date=DATE):
    return dag.test(logical_date=logical(date), run_conf=CONF)


def try_number(dag_run, task_id: str) -> int:
    return next(ti.try_number for ti in dag_run.get_task_instances() if ti.task_id == task_id)


# --- faults ----------------------------------------------------------------------------


def test_steps_over_their_timeout_fail_the_run_and_the_cluster_is_terminated(
    load_dag, batch, aws, earlier_outputs, monkeypatch, capfd
):
    # no step driver: moto's steps stay RUNNING/PENDING for ever
    monkeypatch.setenv("FRUITS_STEP_TIMEOUT_BASE", "3")
    monkeypatch.setenv("FRUITS_STEP_SECONDS_PER_IMAGE", "0")
    dag_run = run(load_dag("emr"))

    states = failed_at(dag_run, "wait_for_step")
    assert try_number(dag_run, "wait_for_step") == 1  # a timeout is not retried
    assert states["remove_cluster"] == "success"
    assert states["summarize_run"] == "upstream_failed"
    (cluster,) = aws.clusters()
    assert cluster["Status"]["State"] == "TERMINATED"
    assert "Waiting up to 3s" in capfd.readouterr().out
    assert snapshot(aws) == earlier_outputs  # marker included: still published as it was


def test_a_cluster_that_fails_to_start_fails_the_run_at_once_with_emrs_reason(
    load_dag, batch, aws, emr_steps, earlier_outputs, capfd
):
    emr_steps("cluster_fails")
    dag_run = run(load_dag("emr"))

    states = failed_at(dag_run, "wait_for_step")
    assert states["remove_cluster"] == "success"  # terminating an ended cluster is fine
    (cluster,) = aws.clusters()
    assert cluster["Status"]["State"].startswith("TERMINATED")
    # the task log says why, without waiting (log_wait) for a stderr no step wrote
    out = capfd.readouterr().out
    log = out[out.index("Waiting up to") :]
    assert f"cluster {cluster['Id']} is TERMINATED_WITH_ERRORS: {BOOTSTRAP_FAILURE}" in log
    assert "no step stderr yet" not in log
    assert snapshot(aws) == earlier_outputs  # marker included


def test_a_cluster_that_stops_under_running_steps_is_noticed_before_the_timeout(
    load_dag, batch, aws, earlier_outputs, monkeypatch
):
    """Steps left RUNNING on a cluster that is gone (moto's, or EMR's state lagging):
    the sensor fails on the cluster's state, not after its (here 10 min) timeout."""
    from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator

    real_execute = EmrAddStepsOperator.execute

    def add_steps_then_lose_the_cluster(self, context):
        step_ids = real_execute(self, context)
        for cluster in emr_clusters():
            cluster.state = "TERMINATED_WITH_ERRORS"
            cluster.last_state_change_reason = "Instance failure"
        return step_ids

    monkeypatch.setattr(EmrAddStepsOperator, "execute", add_steps_then_lose_the_cluster)
    dag = load_dag("emr")
    started = time.monotonic()
    dag_run = run(dag)
    assert time.monotonic() - started < 300  # the sensor's timeout is 600 s

    states = failed_at(dag_run, "wait_for_step")
    assert states["remove_cluster"] == "success"
    assert snapshot(aws) == earlier_outputs


def test_a_refused_cluster_request_fails_the_run_and_the_teardown_copes(
    load_dag, batch, aws, earlier_outputs, monkeypatch, capfd
):
    from airflow.providers.amazon.aws.hooks.emr import EmrHook
    from botocore.exceptions import ClientError

    def refuse(self, *args, **kwargs):
        raise ClientError(
            {"Error": {"Code": "ValidationException", "Message": "Invalid InstanceProfile"}},
            "RunJobFlow",
        )

    monkeypatch.setattr(EmrHook, "create_job_flow", refuse)
    dag_run = run(load_dag("emr"))

    states = failed_at(dag_run, "create_job_flow")
    assert try_number(dag_run, "create_job_flow") == 1  # never a second cluster
    assert states["add_steps"] == "upstream_failed"
    assert states["remove_cluster"] in ("skipped", "upstream_failed")  # nothing to remove
    assert aws.clusters() == []
    assert "Invalid InstanceProfile" in capfd.readouterr().out
    assert snapshot(aws) == earlier_outputs  # marker included


def test_an_s3_error_on_upload_fails_the_run_before_any_cluster(
    load_dag, batch, aws, earlier_outputs, monkeypatch, capfd
):
    """A bucket this connection may not write (AccessDenied): no retry, no cluster,
    and the batch's earlier outputs still published, marker included."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    real_load_file = S3Hook.load_file

    def load_file(self, filename, key, bucket_name=None, **kwargs):
        if not key.startswith("raw/"):
            return real_load_file(self, filename, key, bucket_name=bucket_name, **kwargs)
        try:  # what boto3's upload_file raises for a PutObject refused by S3
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}},
                              "PutObject")  # fmt: skip
        except ClientError as exc:
            raise S3UploadFailedError(f"Failed to upload {filename} to {key}: {exc}")  # noqa: B904

    monkeypatch.setattr(S3Hook, "load_file", load_file)  # files and packed shards alike
    dag_run = run(load_dag("emr"))

    states = failed_at(dag_run, "upload_batch")
    assert try_number(dag_run, "upload_batch") == 1  # AccessDenied: retrying cannot help
    assert states["plan_run"] == "upstream_failed"
    assert states["create_job_flow"] == "upstream_failed"
    assert aws.clusters() == []
    out = capfd.readouterr().out
    assert "cannot copy the batch" in out and "s3://fruits-test/raw/batch=" in out, out[-2000:]
    assert "AccessDenied" in out
    assert snapshot(aws) == earlier_outputs  # marker included


# --- reruns ----------------------------------------------------------------------------


def test_a_rerun_gives_the_same_outputs_without_duplicates(load_dag, batch, aws, emr_steps):
    emr_steps("complete")
    dag = load_dag("emr")
    keys, features = [], []
    for _ in range(2):
        dag_run = run(dag)
        assert str(dag_run.state) == "success", task_states(dag_run)
        keys.append(aws.keys(RUN))
        marker = json.loads(aws.read(MARKER))
        assert marker["run_id"] == dag_run.run_id and marker["batch"] == DATE
        assert aws.keys(STAGING) == []  # switched in, then deleted
        assert_real_outputs(aws, RUN, batch, DATE)  # each image once, not twice
        features.append(sorted(aws.keys(RUN + "features/")))
    first, second = keys
    # Spark names parts afresh on each run: none of the first run's is left
    parts = sorted(k for k in second if k.endswith(".parquet"))
    assert parts and not set(parts) & set(first)
    assert {p.split("/")[2] for p in parts} == {"features", "pca", "rejected"}
    assert [k for k in first if not k.endswith(".parquet")] == [
        k for k in second if not k.endswith(".parquet")
    ]
    plots = [k for k in second if k.startswith(RUN + "report/") and k.endswith(".png")]
    assert RUN + "report/cumulative_variance.png" in plots
    assert sorted(second) == sorted(
        [MARKER, RUN + "report/report.json", *plots, *parts]
        + [f"{RUN}{name}/_SUCCESS" for name in ("features", "pca", "rejected")]
        + [f"{RUN}progress/{step}.json" for step in ("featurize", "reduce")]  # last reports
    )
    assert len(aws.clusters()) == 2


def test_a_failed_reduce_after_featurize_leaves_the_published_batch_as_it_was(
    load_dag, batch, aws, emr_steps, capfd
):
    """The case direct writes got wrong: featurize wrote new features, reduce failed.
    The new features stay in the run's staging; the published batch -- old features,
    old pca, old report, old marker -- is byte for byte the earlier run's, and readers
    still get it. The next good run clears that staging and publishes."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from fruits.storage.publish import run_summary

    driver = emr_steps("complete")
    dag = load_dag("emr")
    assert str(run(dag).state) == "success"
    published = snapshot(aws)
    earlier_run = json.loads(published[MARKER])["run_id"]
    earlier_k = json.loads(published[RUN + "report/report.json"])["k"]

    driver.policy = "fail_reduce"
    dag_run = run(dag)
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert (states["wait_for_step"], states["publish_batch"]) == ("failed", "upstream_failed")
    step_states = [
        [s["Status"]["State"] for s in aws.emr.list_steps(ClusterId=c["Id"])["Steps"][::-1]]
        for c in aws.clusters()
    ]
    assert ["COMPLETED", "FAILED"] in step_states  # featurize done, reduce failed
    assert STEP_ERROR in capfd.readouterr().out
    assert snapshot(aws) == published  # features, pca, report and marker: the earlier run's
    staged = aws.keys(STAGING)
    assert any("/features/" in k for k in staged)  # featurize did write: into staging
    assert not any("/pca/" in k for k in staged)
    summary = run_summary(S3Hook("aws_default"), BUCKET, DATE, require_marker=True)
    assert summary["k"] == earlier_k
    assert json.loads(aws.read(MARKER))["run_id"] == earlier_run

    driver.policy = "complete"
    dag_run = run(dag)
    assert str(dag_run.state) == "success", task_states(dag_run)
    assert aws.keys(STAGING) == []  # the failed run's staging cleared, this run's switched in
    assert json.loads(aws.read(MARKER))["run_id"] == dag_run.run_id


def test_publishing_refuses_a_run_with_missing_outputs(
    load_dag, batch, aws, emr_steps, earlier_outputs, monkeypatch, capfd
):
    """Steps reported COMPLETED but pca/ never written: nothing switched, no retry."""
    driver = emr_steps("complete")
    driver.leave_out["reduce"] = ["--output"]  # reduce ran for real; its pca/ got lost
    dag_run = run(load_dag("emr"))

    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert states["wait_for_step"] == "success"
    assert states["publish_batch"] == "failed"
    assert states["summarize_run"] == "upstream_failed"
    assert try_number(dag_run, "publish_batch") == 1
    out = capfd.readouterr().out
    assert f"missing s3://{BUCKET}/{STAGING}" in out and "/pca/*.parquet" in out
    assert snapshot(aws) == earlier_outputs  # marker included


def test_a_local_cluster_that_fails_to_start_fails_the_run_and_keeps_earlier_outputs(
    load_dag, batch, aws, earlier_outputs, monkeypatch, capfd
):
    from fruits.clusters.local import cluster as local_cluster

    def no_master(*args, **kwargs):
        raise local_cluster.ClusterError("the Spark master did not come up within 180s")

    monkeypatch.setattr(local_cluster, "start_cluster", no_master)
    dag_run = run(load_dag("local"))

    states = failed_at(dag_run, "create_job_flow")
    assert try_number(dag_run, "create_job_flow") == 1
    assert states["remove_cluster"] in ("skipped", "upstream_failed")
    assert "the Spark master did not come up" in capfd.readouterr().out
    assert snapshot(aws) == earlier_outputs  # marker included
