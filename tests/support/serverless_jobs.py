"""moto's EMR Serverless, and the tests' stand-in that runs its job runs for real.

Facts of moto 5.2.5 (``moto/emrserverless/models.py``, and seen against its server):

- A new application is ``STARTED`` at once (the module's ``APPLICATION_STATUS``). The
  provider's create operator first waits for ``CREATED`` (waiter
  ``serverless_app_created``: ``CREATED`` succeeds, ``TERMINATED`` fails, nothing else
  matches), so on moto it would wait until its attempts run out.
  :func:`patch_moto` makes new applications ``CREATED``; the operator's
  ``start_application`` then makes them ``STARTED``, as on AWS.
- A new job run is ``SUCCESS`` at once (``JOB_STATUS``), with nothing run.
  :func:`patch_moto` makes it ``SUBMITTED``; :class:`ServerlessJobDriver` runs it and sets
  ``RUNNING``, then ``SUCCESS`` or ``FAILED`` from the real exit status.
- ``list_job_runs`` on an application that never had a job run raises
  ``ResourceNotFoundException`` (AWS lists none). The provider's ``force_stop``
  (``cancel_running_jobs``) calls it before stopping; :func:`patch_moto` makes it list
  none there.
- ``stop_application``, ``delete_application`` (only from ``CREATED`` or ``STOPPED``) and
  ``cancel_job_run`` change the state at once.
- The ``architecture`` given to ``create_application`` is not kept (``get_application``
  answers None); the tags are, on applications and job runs. There is no tagging API.
- ``create_service_linked_role`` for ``ops.emr-serverless.amazonaws.com`` names the role
  ``AWSServiceRoleForemr-serverless_Ops``, not AWS's
  ``AWSServiceRoleForAmazonEMRServerless``: the fixture creates the role by its name.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from dag_support import CANNED_STDERR, STALLED, RealStepsDriver, is_reduce

from fruits.clusters.serverless.request import PYTHON_CONFS, driver_log_key
from fruits.storage.s3sync import split_uri

ENDED_APPS = ("STOPPING", "STOPPED", "TERMINATED")
# what EMR Serverless says of a job whose driver exited non-zero
FAILED_DETAILS = (
    "Job failed, please check complete logs in configured logging destination. ExitCode: {code}."
)


def patch_moto(monkeypatch: Any) -> None:
    """Work around the facts above for one test (moto's server runs in this process)."""
    from moto.emrserverless import models

    monkeypatch.setattr(models, "APPLICATION_STATUS", "CREATED")
    monkeypatch.setattr(models, "JOB_STATUS", "SUBMITTED")
    real = models.EMRServerlessBackend.list_job_runs

    def list_job_runs(self, application_id, *args, **kwargs):
        if application_id in self.applications and application_id not in self.job_runs:
            return []
        return real(self, application_id, *args, **kwargs)

    monkeypatch.setattr(models.EMRServerlessBackend, "list_job_runs", list_job_runs)


def backends():
    from moto.emrserverless.models import emrserverless_backends

    for account in list(emrserverless_backends.keys()):
        for region in list(emrserverless_backends[account].keys()):
            yield emrserverless_backends[account][region]


def dropped(conf: str) -> bool:
    """The confs that only EMR Serverless can act on: its own (``spark.emr-serverless.*``),
    the archive (``spark.archives``) and the archive's interpreter for the executors."""
    key = conf.split("=", 1)[0]
    return key.startswith("spark.emr-serverless.") or key in ("spark.archives", *PYTHON_CONFS)


def submitted_step(job: Any) -> dict[str, Any]:
    """A job run's ``sparkSubmit`` driver back as the EMR-format step it came from, with
    the confs this host cannot use dropped (:func:`dropped`)."""
    spark = job.job_driver["sparkSubmit"]
    params = spark.get("sparkSubmitParameters", "").split()
    kept: list[str] = []
    i = 0
    while i < len(params):
        if params[i] == "--conf" and i + 1 < len(params) and dropped(params[i + 1]):
            i += 2
            continue
        kept.append(params[i])
        i += 1
    args = ["spark-submit", "--deploy-mode", "cluster", *kept, spark["entryPoint"],
            *spark.get("entryPointArguments", [])]  # fmt: skip
    return {"Name": job.name.rsplit(" ", 1)[0], "HadoopJarStep": {"Args": args}}


def log_uri(job: Any) -> str:
    return job.configuration_overrides["monitoringConfiguration"]["s3MonitoringConfiguration"][
        "logUri"
    ]


class ServerlessJobDriver(RealStepsDriver):
    """A background thread that plays EMR Serverless's workers for the job runs moto
    leaves ``SUBMITTED`` (:func:`patch_moto`), one at a time, in the order submitted.

    ``complete``: each job's real spark-submit runs on this host
    (:class:`real_steps.RealSteps`, one per application and run key: reduce reads
    featurize's outputs where it wrote them), ``RUNNING`` while it runs, then its outputs
    published and ``SUCCESS``, or ``FAILED`` with its real stderr and stdout at the
    driver's log keys under the job's ``logUri``. ``fail``: the job ``FAILED`` at once
    with a canned stderr; ``fail_reduce``: featurize for real, reduce so. ``stall``:
    featurize ``RUNNING``, its progress frozen (:data:`dag_support.STALLED`). A job
    cancelled, or whose application stops, while it runs is stopped here too."""

    def __init__(self, s3: Any, policy: str):
        super().__init__()
        self.s3 = s3
        self.policy = policy
        self.index: dict[str, int] = {}  # job run id -> its step's index in its RealSteps
        self.stalled: set[str] = set()  # the job runs ``stall`` holds RUNNING
        # runs: (application id, run key) -> RealSteps; running: (that key, job run id)

    def step(self) -> None:
        for backend in backends():
            for app_id, jobs in list(backend.job_runs.items()):
                app = backend.applications.get(app_id)
                for job in list(jobs):
                    self.drive(app, job)

    def drive(self, app: Any, job: Any) -> None:
        key = (job.application_id, job.name.rsplit(" ", 1)[-1])
        if self.running == (key, job.id):
            self.watch(app, job, key)
        elif job.state == "SUBMITTED":
            if self.policy == "fail" or (self.policy == "fail_reduce" and self.reduce(job)):
                self.write_log(job, "stderr.gz", CANNED_STDERR)
                job.state, job.state_details = "FAILED", FAILED_DETAILS.format(code=1)
            elif self.policy == "stall":
                job.state = "RUNNING"
                self.stalled.add(job.id)
            elif self.running is None:
                self.start(job, key)
        elif job.state == "RUNNING" and job.id in self.stalled and not self.reduce(job):
            args = submitted_step(job)["HadoopJarStep"]["Args"]
            folder = args[args.index("--progress") + 1]
            bucket, prefix = split_uri(folder)
            body = json.dumps({**STALLED, "step": "featurize"}).encode()
            self.s3.put_object(Bucket=bucket, Key=f"{prefix}featurize.json", Body=body)

    @staticmethod
    def reduce(job: Any) -> bool:
        return is_reduce(job.job_driver["sparkSubmit"].get("entryPointArguments", []))

    def start(self, job: Any, key: tuple[str, str]) -> None:
        from real_steps import RealSteps

        run = self.runs.setdefault(key, RealSteps([]))
        self.index[job.id] = run.add(submitted_step(job))
        run.start(self.index[job.id])
        self.running = (key, job.id)
        job.state = "RUNNING"

    def watch(self, app: Any, job: Any, key: tuple[str, str]) -> None:
        run, index = self.runs[key], self.index[job.id]
        if job.state != "RUNNING" or app is None or app.state in ENDED_APPS:
            run.stop()  # cancelled, or its application stopped under it
            self.running = None
            if job.state == "RUNNING":
                job.state = "CANCELLED"
            return
        code = run.poll()
        if code is None:
            return
        self.running = None
        if code == 0:
            run.publish(index)
            job.state = "SUCCESS"
        else:
            self.write_log(job, "stderr.gz", run.output(index, "stderr"))
            self.write_log(job, "stdout.gz", run.output(index, "stdout"))
            job.state, job.state_details = "FAILED", FAILED_DETAILS.format(code=code)

    def write_log(self, job: Any, name: str, text: str) -> None:
        """Where EMR Serverless copies the driver's logs: ``<logUri>/applications/<app>/
        jobs/<job>/SPARK_DRIVER/<name>``."""
        bucket, key = split_uri(driver_log_key(log_uri(job), job.application_id, job.id, name))
        self.s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(text.encode()))
