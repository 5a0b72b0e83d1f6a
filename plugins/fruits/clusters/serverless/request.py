"""What the ``serverless`` backend asks EMR Serverless for, computed without AWS calls:
the application (``CreateApplication``), and each step as a job run (``StartJobRun``).

The steps are the run's EMR-format steps (:func:`fruits.clusters.common.spark_steps.build_steps`):
``spark-submit --deploy-mode cluster --py-files <zip> <script> <args>`` becomes a
``sparkSubmit`` job driver -- the script its entry point, the arguments its entry point
arguments, the options its ``sparkSubmitParameters`` -- plus the confs every job needs
here: the Python archive (EMR Serverless 7 runs Python 3.9, our pins need 3.11) and the
executors' size. Standard library only: ``plan_run`` and the tests import it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from fruits.clusters.common import executor_sizing
from fruits.settings import Settings

PROJECT_TAG = ("project", "fruits-pipeline")
BUCKET_TAG = "fruits:bucket"
RUN_TAG = "fruits:run-key"  # only on an application a run created: its teardown deletes it
ARCHIVE_NAME = "serverless-env.tar.gz"  # beside the staged wheels it is built from
ENVIRONMENT = "environment"  # where spark.archives unpacks the archive
PYTHON = f"./{ENVIRONMENT}/bin/python"
WHEELS_ARCH = {"X86_64": "x86_64", "ARM64": "arm64"}
# the confs that carry the archive's interpreter: a run submits them, the tests' stand-in
# for EMR Serverless drops them (tests/support/serverless_jobs.py)
PYTHON_CONFS = (
    "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON",
    "spark.emr-serverless.driverEnv.PYSPARK_PYTHON",
    "spark.executorEnv.PYSPARK_PYTHON",
)
NAME_LIMIT = 64  # an application's name


def archive_uri(settings: Settings) -> str:
    """``FRUITS_SERVERLESS_ARCHIVE``, or where ``make serverless-archive`` puts it: beside
    the wheels it is built from (``wheels/<hash of the jobs' pins>/<arch>/``), so a changed
    pin finds no archive and the pre-flight says so. Empty with a custom image."""
    sls = settings.serverless
    if sls.image:
        return ""
    if sls.archive:
        return sls.archive
    from fruits.storage.wheels import node_wheels

    wheels = node_wheels("emr", WHEELS_ARCH[sls.arch], settings.jobs_dir)  # the jobs' pins
    return wheels.uri(settings.bucket) + ARCHIVE_NAME


def python_confs(archive: str) -> dict[str, str]:
    """The archive, unpacked as ``./environment`` beside the driver and each executor, and
    its interpreter for both (AWS's documented route to another Python). With a custom
    image (no archive), the image's own ``PYSPARK_PYTHON``: nothing to add."""
    if not archive:
        return {}
    return {"spark.archives": f"{archive}#{ENVIRONMENT}", **dict.fromkeys(PYTHON_CONFS, PYTHON)}


def sizing_confs(settings: Settings) -> dict[str, str]:
    """One executor per worker, filling it (the backends' one rule,
    :func:`fruits.clusters.common.executor_sizing.size_executors`: heap, and off-heap for
    the JVM and one Python worker per core); dynamic allocation (on by default) never
    asks for more executors than the application's maximum capacity holds beside the
    driver, so a run cannot queue for capacity it will never get."""
    sls = settings.serverless
    size = executor_sizing.size_executors(sls.worker_vcpus, sls.worker_memory_gb * 1024, 0)
    executors = max(1, min(sls.max_vcpus // sls.worker_vcpus, sls.max_memory_gb //
                           sls.worker_memory_gb) - 1)  # fmt: skip
    return {
        **size.spark_conf(),
        "spark.driver.cores": str(sls.worker_vcpus),
        "spark.dynamicAllocation.maxExecutors": str(executors),
    }


def tags(settings: Settings, run_key: str | None = None) -> dict[str, str]:
    """The tags of what a run creates: the Airflow role may act only on applications
    tagged ``project=fruits-pipeline`` (infra/fruits-pipeline.yaml); the bucket's and, on
    an application the run created, the run key's (its teardown and the next run's
    ``clear_leftovers`` find it by them)."""
    found = {
        **settings.serverless.tags,
        PROJECT_TAG[0]: PROJECT_TAG[1],
        BUCKET_TAG: settings.bucket,
    }
    if run_key:
        found[RUN_TAG] = run_key
    return found


def application_name(run_key: str) -> str:
    """``fruits-<run key>``, cut to EMR Serverless's 64 characters with a hash that keeps
    it the run's own."""
    name = f"fruits-{run_key}"
    if len(name) <= NAME_LIMIT:
        return name
    digest = hashlib.sha256(run_key.encode()).hexdigest()[:8]
    return f"{name[: NAME_LIMIT - 9]}-{digest}"


def cluster_request(settings: Settings, *, name: str, run_key: str, timeout: int) -> dict[str, Any]:
    """The backend's plan: the application to create (or the named one to reuse), and what
    every job run of the run carries."""
    sls = settings.serverless
    application = {
        "name": application_name(run_key),
        "releaseLabel": sls.release_label,
        "type": "SPARK",
        "architecture": sls.arch,
        # no initialCapacity: pre-initialised workers bill while idle
        "maximumCapacity": {"cpu": f"{sls.max_vcpus} vCPU", "memory": f"{sls.max_memory_gb} GB"},
        "autoStartConfiguration": {"enabled": True},
        "autoStopConfiguration": {"enabled": True, "idleTimeoutMinutes": sls.idle_minutes},
        "tags": tags(settings, run_key),
    }
    if sls.image:
        application["imageConfiguration"] = {"imageUri": sls.image}
    archive = archive_uri(settings)
    return {
        "run_key": run_key,
        "run_name": name,
        "application_id": sls.application_id,  # empty: the run creates its own
        "application": application,
        "job": {
            "execution_role": sls.execution_role,
            "log_uri": sls.log_uri,
            "conf": {**python_confs(archive), **sizing_confs(settings)},
            "tags": tags(settings),
            # a job that outlives its sensor still ends (EMR Serverless's own timeout)
            "timeout_minutes": max(5, math.ceil(timeout / 60)),
        },
    }


def split_submit(args: list[str]) -> tuple[list[str], str, list[str]]:
    """``spark-submit [options] <script> [arguments]`` -> ``(options, script, arguments)``;
    ``--deploy-mode`` is dropped (EMR Serverless chooses)."""
    if not args or args[0] != "spark-submit":
        raise ValueError(f"not a spark-submit step: {args[:1]}")
    options: list[str] = []
    i = 1
    while i < len(args) and args[i].startswith("--"):
        if args[i] != "--deploy-mode":
            options += args[i : i + 2]
        i += 2
    if i >= len(args):
        raise ValueError("a spark-submit step without a script")
    return options, args[i], args[i + 1 :]


def job_name(step: Mapping[str, Any], run_key: str) -> str:
    """``<step name> <run key>``: the teardown finds this run's job runs by it, never
    another's on a shared application."""
    return f"{step['Name']} {run_key}"[-256:]


def is_run_job(name: str, run_key: str) -> bool:
    return name.endswith(f" {run_key}")


def job_run(cluster: Mapping[str, Any], step: Mapping[str, Any]) -> dict[str, Any]:
    """The ``StartJobRun`` fields of one step (the role still a name or ARN)."""
    options, script, arguments = split_submit(list(step["HadoopJarStep"]["Args"]))
    job = cluster["job"]
    for key, value in job["conf"].items():
        options += ["--conf", f"{key}={value}"]
    return {
        "name": job_name(step, cluster["run_key"]),
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": script,
                "entryPointArguments": arguments,
                "sparkSubmitParameters": " ".join(options),
            }
        },
        "configurationOverrides": {
            "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": job["log_uri"]}}
        },
        "tags": job["tags"],
        "executionTimeoutMinutes": job["timeout_minutes"],
    }


def role_arn(role: str, account: str, partition: str = "aws") -> str:
    """A role's ARN from its name (as the stack names it) or the ARN itself."""
    return role if role.startswith("arn:") else f"arn:{partition}:iam::{account}:role/{role}"


def driver_log_key(log_uri: str, application_id: str, job_run_id: str, name: str) -> str:
    """Where EMR Serverless copies a job's driver log (``stderr.gz``, ``stdout.gz``) under
    the job's ``logUri``, as an s3:// URI."""
    base = log_uri if log_uri.endswith("/") else log_uri + "/"
    return f"{base}applications/{application_id}/jobs/{job_run_id}/SPARK_DRIVER/{name}"
