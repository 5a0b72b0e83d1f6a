"""Whole runs of the ``serverless`` backend with ``dag.test()`` against moto's server.

moto's EMR Serverless runs no job (tests/support/serverless_jobs.py has its facts), so the
``serverless_jobs`` fixture plays the workers: each job run's real spark-submit runs on
this host, from the job driver as submitted (the archive's confs dropped), and its
outputs go to the job's s3:// URIs; or it fails, its stderr where EMR Serverless copies
a driver's logs. The job drivers are asserted as they left boto3 (``calls``)."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
from dag_support import BUCKET, STEP_ERROR, failed_at, logical, task_states, write_test_batch
from job_support import assert_same_features

pytestmark = pytest.mark.usefixtures("airflow_db")

DATE = "2026-11-24"
RUN = f"runs/batch={DATE}/"
CONF = {"weights": "random", "image_size": 64}
ROLE = "arn:aws:iam::123456789012:role/fruits-serverless-job-role"  # moto's account
PYTHON = "./environment/bin/python"


@pytest.fixture
def batch(fruits_env):
    return write_test_batch(fruits_env / DATE, ["Banana", "Pêche"], 2, bad_label="Banana")


def run(dag, conf=CONF):
    return dag.test(logical_date=logical(DATE), run_conf=conf)


def applications(aws) -> dict[str, str]:
    """Application id -> state, every application moto has."""
    found = aws.serverless.list_applications()["applications"]
    return {a["id"]: a["state"] for a in found}


def published(aws, output: str) -> pd.DataFrame:
    keys = sorted(k for k in aws.keys(f"{RUN}{output}/") if k.endswith(".parquet"))
    assert keys, f"nothing published under {RUN}{output}/"
    frame = pd.concat([pd.read_parquet(io.BytesIO(aws.read(k))) for k in keys])
    return frame.sort_values("path").reset_index(drop=True)


def outputs(aws) -> dict[str, pd.DataFrame]:
    return {name: published(aws, name) for name in ("features", "pca", "rejected")}


def conf_of(params: str) -> dict[str, str]:
    """``--conf k=v`` pairs of a ``sparkSubmitParameters`` string."""
    words = params.split()
    return dict(words[i + 1].split("=", 1) for i in range(len(words) - 1) if words[i] == "--conf")


@pytest.mark.slow
def test_a_serverless_run_publishes_what_the_local_backend_does_and_deletes_its_application(
    load_dag, batch, aws, serverless_jobs, serverless_account, calls, capfd
):
    local = load_dag("local")
    dag_run = run(local)
    assert str(dag_run.state) == "success", task_states(dag_run)
    expected = outputs(aws)

    serverless_jobs("complete")
    dag_run = run(load_dag("serverless"))
    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    assert set(states.values()) == {"success"}, states
    assert list(applications(aws).values()) == ["TERMINATED"]  # stopped, then deleted

    # the application: emr-7, Spark, the architecture and capacity of the settings, auto
    # stop, no pre-initialised capacity, tagged for the Airflow role's policy
    (created,) = calls["CreateApplication"]
    assert created["releaseLabel"].startswith("emr-7.") and created["type"] == "SPARK"
    assert created["architecture"] == "X86_64"
    assert created["maximumCapacity"] == {"cpu": "32 vCPU", "memory": "128 GB"}
    assert created["autoStartConfiguration"] == {"enabled": True}
    assert created["autoStopConfiguration"] == {"enabled": True, "idleTimeoutMinutes": 15}
    assert "initialCapacity" not in created
    assert created["tags"]["project"] == "fruits-pipeline"
    assert created["tags"]["fruits:bucket"] == BUCKET
    assert [c["applicationId"] for c in calls["StopApplication"]] == [
        c["applicationId"] for c in calls["DeleteApplication"]
    ]

    # the job drivers as a real account receives them
    featurize, reduce = calls["StartJobRun"]
    code = f"s3://{BUCKET}/code/"
    for job, script in ((featurize, "featurize.py"), (reduce, "reduce.py")):
        spark = job["jobDriver"]["sparkSubmit"]
        assert spark["entryPoint"].startswith(code) and spark["entryPoint"].endswith(script)
        params = spark["sparkSubmitParameters"]
        assert re.match(rf"--py-files {code}\S+/fruits_spark\.zip --conf ", params)
        assert "--deploy-mode" not in params
        assert conf_of(params) == {
            "spark.archives": f"{serverless_account}#environment",
            "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON": PYTHON,
            "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": PYTHON,
            "spark.executorEnv.PYSPARK_PYTHON": PYTHON,
            # one executor fills a 4 vCPU, 16 GB worker: heap, and off-heap for the JVM
            # (a tenth of the heap) and four Python workers of 768 MiB
            "spark.executor.cores": "4",
            "spark.executor.memory": "12101m",
            "spark.executor.memoryOverhead": "4283m",
            "spark.driver.cores": "4",
            "spark.dynamicAllocation.maxExecutors": "7",  # 32 vCPU, 128 GB, less the driver
        }
        assert job["executionRoleArn"] == ROLE
        logs = {"s3MonitoringConfiguration": {"logUri": f"s3://{BUCKET}/logs/serverless/"}}
        assert job["configurationOverrides"] == {"monitoringConfiguration": logs}
        assert job["tags"] == {"project": "fruits-pipeline", "fruits:bucket": BUCKET}
        assert job["executionTimeoutMinutes"] >= 5
    args = featurize["jobDriver"]["sparkSubmit"]["entryPointArguments"]
    assert args[args.index("--input") + 1] == f"s3://{BUCKET}/raw/batch={DATE}/"
    assert args[args.index("--weights") + 1] == "random"
    assert args[args.index("--image-size") + 1] == "64"
    assert args[args.index("--model-file") + 1].startswith(f"s3://{BUCKET}/models/")
    staged = args[args.index("--output") + 1]
    assert staged.startswith(f"s3://{BUCKET}/runs/_staging/batch={DATE}/")
    args = reduce["jobDriver"]["sparkSubmit"]["entryPointArguments"]
    assert args[args.index("--input") + 1] == staged  # featurize's output
    assert featurize["name"].startswith(f"featurize batch={DATE} ")
    assert reduce["name"].startswith(f"reduce batch={DATE} ")

    # the same outputs as the local backend's
    got = outputs(aws)
    for name in ("features", "pca", "rejected"):
        assert list(got[name]["path"]) == list(expected[name]["path"]), name
        assert list(got[name]["label"]) == list(expected[name]["label"]), name
    assert len(got["features"]) == len(batch.good) and len(got["rejected"]) == len(batch.bad)
    assert_same_features(
        np.stack(got["features"]["features"]), np.stack(expected["features"]["features"])
    )
    # PCA components are defined up to their sign
    pca, pca_local = np.stack(got["pca"]["pca"]), np.stack(expected["pca"]["pca"])
    assert pca.shape == pca_local.shape
    np.testing.assert_allclose(np.abs(pca), np.abs(pca_local), rtol=1e-3, atol=1e-6)

    out = capfd.readouterr().out
    assert re.search(r"featurize: \d+ / \d+ images", out)  # the progress lines


def test_a_failing_job_fails_the_run_shows_its_stderr_and_deletes_the_application(
    load_dag, batch, aws, serverless_jobs, calls, capfd
):
    serverless_jobs("fail")
    dag_run = run(load_dag("serverless"))

    states = failed_at(dag_run, "wait_for_featurize")
    assert states["remove_cluster"] == "success"  # the teardown ran...
    assert states["add_reduce_step"] == "upstream_failed"  # ...and the run still failed
    assert list(applications(aws).values()) == ["TERMINATED"]
    assert len(calls["StartJobRun"]) == 1
    out = capfd.readouterr().out
    log = out[out.index("Waiting up to") :]
    assert re.search(rf"job run \S+ \(featurize batch={DATE} \S+\) is FAILED", log)
    assert "ExitCode: 1" in log  # EMR Serverless's state details
    assert STEP_ERROR in log  # the driver's stderr.gz, from the job's log URI
    assert "/SPARK_DRIVER/stderr.gz (tail) ---" in log
    assert aws.keys("runs/batch=") == []  # nothing published


def test_a_named_application_is_reused_left_running_and_only_this_runs_job_cancelled(
    load_dag, batch, aws, serverless_jobs, calls, capfd, monkeypatch
):
    """A team's warm application, with another job of theirs running on it: a stalled
    featurize fails the run; its teardown cancels that job only, and leaves the
    application running."""
    from moto.emrserverless.models import emrserverless_backends

    app = aws.serverless.create_application(name="team-warm", releaseLabel="emr-7.13.0",
                                            type="SPARK")["applicationId"]  # fmt: skip
    aws.serverless.start_application(applicationId=app)
    theirs = aws.serverless.start_job_run(
        applicationId=app, executionRoleArn=ROLE, name="their nightly job",
        jobDriver={"sparkSubmit": {"entryPoint": "s3://team/job.py"}},
    )["jobRunId"]  # fmt: skip
    backend = emrserverless_backends["123456789012"]["us-east-1"]
    backend.job_runs[app][0].state = "RUNNING"  # theirs runs (not this host's to run)
    monkeypatch.setenv("FRUITS_SERVERLESS_APPLICATION_ID", app)
    monkeypatch.setenv("FRUITS_STALL_MINUTES", "1")
    serverless_jobs("stall")
    calls.clear()  # the run's calls only
    dag_run = run(load_dag("serverless"))

    states = failed_at(dag_run, "wait_for_featurize")
    assert states["create_job_flow"] == "success" and states["remove_cluster"] == "success"
    assert "CreateApplication" not in calls
    assert "StopApplication" not in calls and "DeleteApplication" not in calls
    assert applications(aws) == {app: "STARTED"}
    ours = calls["StartJobRun"][0]
    assert ours["applicationId"] == app
    jobs = {
        j["name"]: j["state"] for j in aws.serverless.list_job_runs(applicationId=app)["jobRuns"]
    }
    assert jobs == {"their nightly job": "RUNNING", ours["name"]: "CANCELLED"}
    cancelled = {c["jobRunId"] for c in calls["CancelJobRun"]}
    assert cancelled and theirs not in cancelled
    out = capfd.readouterr().out
    assert "featurize stalled: no progress for " in out
    assert f"application {app} is not this run's: left running" in out


def test_a_refused_job_still_deletes_the_application(load_dag, batch, aws, serverless_jobs,
                                                      monkeypatch, capfd):  # fmt: skip
    """StartJobRun refused (a role EMR Serverless may not assume, say): add_steps fails,
    and the application the run created is stopped and deleted."""
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    real_call = BaseClient._make_api_call

    def refuse(self, operation, params):
        if operation == "StartJobRun":
            error = {"Code": "AccessDeniedException", "Message": "not authorized to pass role"}
            raise ClientError({"Error": error}, operation)
        return real_call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", refuse)
    serverless_jobs("complete")
    dag_run = run(load_dag("serverless"))

    states = failed_at(dag_run, "add_steps")
    assert states["remove_cluster"] == "success"
    assert list(applications(aws).values()) == ["TERMINATED"]
    assert "not authorized to pass role" in capfd.readouterr().out


def test_a_missing_archive_fails_the_run_before_any_application(
    load_dag, batch, aws, serverless_jobs, serverless_account, capfd
):
    aws.s3.delete_object(Bucket=BUCKET, Key=serverless_account.split(f"{BUCKET}/", 1)[1])
    dag_run = run(load_dag("serverless"))

    states = failed_at(dag_run, "validate_params")
    assert states["create_job_flow"] == "upstream_failed"
    assert applications(aws) == {}
    out = capfd.readouterr().out
    assert f"no Python archive at {serverless_account}" in out
    assert "make serverless-archive" in out


def test_the_next_run_clears_what_a_killed_run_left(aws, serverless_account, monkeypatch):
    """clear_leftovers (run while holding the cluster slot, before creating anything):
    this bucket's runs' applications are stopped and deleted, this bucket's runs' jobs on
    a named application cancelled; nothing else is touched."""
    from fruits.clusters import serverless
    from fruits.settings import load_settings

    def app(name: str, tags: dict[str, str]) -> str:
        made = aws.serverless.create_application(name=name, releaseLabel="emr-7.13.0",
                                                 type="SPARK", tags=tags)  # fmt: skip
        aws.serverless.start_application(applicationId=made["applicationId"])
        return made["applicationId"]

    mine = {"project": "fruits-pipeline", "fruits:bucket": BUCKET}
    killed = app("fruits-killed", {**mine, "fruits:run-key": "killed-run"})
    other = app("fruits-other", {**mine, "fruits:bucket": "someone-elses-bucket",
                                 "fruits:run-key": "their-run"})  # fmt: skip
    named = app("team-warm", {})
    driver = {"sparkSubmit": {"entryPoint": "s3://x/job.py"}}
    left = aws.serverless.start_job_run(applicationId=named, executionRoleArn=ROLE,
                                        name="featurize killed-run", jobDriver=driver,
                                        tags=mine)["jobRunId"]  # fmt: skip
    theirs = aws.serverless.start_job_run(
        applicationId=named, executionRoleArn=ROLE, name="their job", jobDriver=driver
    )["jobRunId"]
    monkeypatch.setenv("FRUITS_SERVERLESS_APPLICATION_ID", named)

    assert serverless.clear_leftovers(load_settings()) == {killed: "killed-run", "jobs": [left]}
    assert applications(aws) == {killed: "TERMINATED", other: "STARTED", named: "STARTED"}
    job = {j: aws.serverless.get_job_run(applicationId=named, jobRunId=j)["jobRun"]["state"]
           for j in (left, theirs)}  # fmt: skip
    assert job == {left: "CANCELLED", theirs: "SUBMITTED"}
    assert serverless.clear_leftovers(load_settings()) == {}  # nothing left: a no-op
