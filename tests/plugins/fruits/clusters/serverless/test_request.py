"""What the serverless backend asks EMR Serverless for: the application, the job runs made
from the run's steps, and the settings that shape them."""

from __future__ import annotations

import pytest
from dag_support import BUCKET, CODE, ROOT

from fruits.clusters.common.spark_steps import build_steps
from fruits.clusters.serverless import request
from fruits.env_values import ConfigError
from fruits.settings import load_settings
from fruits.storage.wheels import node_wheels

RUN = {"model": "mobilenetv2", "image_size": 64, "variance": 0.95, "runtime": "litert",
       "model_file": f"s3://{BUCKET}/models/k.tflite"}  # fmt: skip
KEY = "scheduled__2026-11-25T00-00-00-00-00-0a1b2c3d"


def plan(env: dict[str, str] | None = None) -> tuple[dict, list[dict]]:
    settings = load_settings({"FRUITS_BUCKET": BUCKET, **(env or {})})
    cluster = request.cluster_request(settings, name="fruits run", run_key=KEY, timeout=2400)
    steps = build_steps(bucket=BUCKET, batch="2026-11-24", run_key=KEY, code=CODE, run=RUN)
    return cluster, steps


def words(params: str) -> list[str]:
    return params.split()


def test_each_step_becomes_a_job_run_with_the_same_spark_submit():
    cluster, steps = plan()
    for step, script in zip(steps, (CODE["featurize"], CODE["reduce"]), strict=True):
        job = request.job_run(cluster, step)
        spark = job["jobDriver"]["sparkSubmit"]
        args = step["HadoopJarStep"]["Args"]
        assert spark["entryPoint"] == script
        assert spark["entryPointArguments"] == args[args.index(script) + 1 :]
        params = words(spark["sparkSubmitParameters"])
        assert params[:2] == ["--py-files", CODE["py_files"]]
        assert "--deploy-mode" not in params and "cluster" not in params
        assert job["name"] == f"{step['Name']} {KEY}"
        assert request.is_run_job(job["name"], KEY) and not request.is_run_job(job["name"], "x")
        assert job["executionTimeoutMinutes"] == 40  # the batch's 2,400 s
        assert job["configurationOverrides"]["monitoringConfiguration"] == {
            "s3MonitoringConfiguration": {"logUri": f"s3://{BUCKET}/logs/serverless/"}
        }


def test_the_archive_carries_the_interpreter_of_driver_and_executors():
    cluster, steps = plan()
    params = words(request.job_run(cluster, steps[0])["jobDriver"]["sparkSubmit"][
        "sparkSubmitParameters"])  # fmt: skip
    confs = dict(params[i + 1].split("=", 1) for i, w in enumerate(params) if w == "--conf")
    digest = node_wheels("emr", "x86_64", ROOT / "spark_jobs").digest
    archive = f"s3://{BUCKET}/wheels/{digest}/x86_64/serverless-env.tar.gz"
    assert confs["spark.archives"] == f"{archive}#environment"
    assert (
        confs["spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON"] == "./environment/bin/python"
    )
    assert confs["spark.emr-serverless.driverEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
    assert confs["spark.executorEnv.PYSPARK_PYTHON"] == "./environment/bin/python"


def test_arm64_reads_the_arm64_archive_and_an_image_needs_no_archive():
    cluster, steps = plan({"FRUITS_SERVERLESS_ARCH": "arm64"})
    assert cluster["application"]["architecture"] == "ARM64"
    assert "/arm64/serverless-env.tar.gz#environment" in cluster["job"]["conf"]["spark.archives"]
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/fruits:3.11"
    cluster, steps = plan({"FRUITS_SERVERLESS_IMAGE": image})
    assert cluster["application"]["imageConfiguration"] == {"imageUri": image}
    assert not any("PYSPARK" in k or k == "spark.archives" for k in cluster["job"]["conf"])


def test_executors_fill_a_worker_and_stay_within_the_maximum_capacity():
    small = {"WORKER_VCPUS": "2", "WORKER_MEMORY_GB": "8", "MAX_VCPUS": "16", "MAX_MEMORY_GB": "64"}
    cluster, _ = plan({f"FRUITS_SERVERLESS_{k}": v for k, v in small.items()})
    conf = cluster["job"]["conf"]
    heap = int(conf["spark.executor.memory"].removesuffix("m"))
    overhead = int(conf["spark.executor.memoryOverhead"].removesuffix("m"))
    assert conf["spark.executor.cores"] == "2"
    assert 8 * 1024 - 8 <= heap + overhead <= 8 * 1024  # the worker (to rounding), no more
    assert overhead >= 2 * 768  # a Python worker per core, off-heap
    assert conf["spark.dynamicAllocation.maxExecutors"] == "7"  # 16 vCPU: the driver and 7


def test_the_application_bills_nothing_idle_and_carries_the_run_key():
    cluster, _ = plan({"FRUITS_SERVERLESS_TAGS": "team=vision"})
    app = cluster["application"]
    assert app["releaseLabel"] == "emr-7.13.0" and app["type"] == "SPARK"
    assert "initialCapacity" not in app
    assert app["autoStopConfiguration"] == {"enabled": True, "idleTimeoutMinutes": 15}
    assert app["tags"] == {"team": "vision", "project": "fruits-pipeline",
                           "fruits:bucket": BUCKET, "fruits:run-key": KEY}  # fmt: skip
    assert "fruits:run-key" not in cluster["job"]["tags"]
    assert cluster["application_id"] == ""  # created by the run
    assert len(request.application_name("x" * 200)) == 64
    assert request.application_name("a" * 200) != request.application_name("a" * 199 + "b")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRUITS_SERVERLESS_ARCH": "sparc"}, "X86_64 or ARM64"),
        ({"FRUITS_SERVERLESS_RELEASE_LABEL": "emr-6.15.0"}, "emr-7.x"),
        ({"FRUITS_SERVERLESS_ARCHIVE": "s3://b/a.tar.gz",
          "FRUITS_SERVERLESS_IMAGE": "x.dkr.ecr.us-east-1.amazonaws.com/f:1"}, "not both"),
        ({"FRUITS_SERVERLESS_ARCHIVE": "/tmp/env.tar.gz"}, "s3://"),
        ({"FRUITS_SERVERLESS_WORKER_VCPUS": "8"}, "1, 2 or 4"),
        ({"FRUITS_SERVERLESS_WORKER_MEMORY_GB": "40"}, "8 to 30 GB"),
        ({"FRUITS_SERVERLESS_MAX_VCPUS": "4"}, "room for the driver"),
    ],
)  # fmt: skip
def test_settings_refuse_what_emr_serverless_would(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_a_named_application_is_planned_for_reuse():
    cluster, _ = plan({"FRUITS_SERVERLESS_APPLICATION_ID": "00fabc123"})
    assert cluster["application_id"] == "00fabc123"


def test_role_arn_and_driver_log_key():
    assert request.role_arn("r", "123456789012") == "arn:aws:iam::123456789012:role/r"
    assert request.role_arn("arn:aws-cn:iam::1:role/r", "2") == "arn:aws-cn:iam::1:role/r"
    assert request.driver_log_key("s3://b/logs", "app", "job", "stderr.gz") == (
        "s3://b/logs/applications/app/jobs/job/SPARK_DRIVER/stderr.gz"
    )
