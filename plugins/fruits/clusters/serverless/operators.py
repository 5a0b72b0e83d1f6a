"""The ``serverless`` backend's tasks: the provider's EMR Serverless operators, given what
``plan_run`` computed (:mod:`.request`) when they run.

Facts of provider 9.39.0 this works with: only the connection fields of
``EmrServerlessCreateApplicationOperator`` are templated, so the request comes in
through a templated ``cluster`` of our own; its client token is a fresh uuid per parse
(a retry would create a second application: the backends' submits never retry, and ours
derive the token from the run key); its waits default to 25 x 60 s; ``deferrable`` needs
``aiobotocore``, which is not installed: nothing here defers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.emr import (
    EmrServerlessCreateApplicationOperator,
    EmrServerlessDeleteApplicationOperator,
    EmrServerlessStartJobOperator,
)
from airflow.providers.amazon.aws.sensors.emr import EmrServerlessJobSensor
from airflow.sdk.exceptions import AirflowFailException

from fruits.clusters.common.step_reports import s3_log_tail
from fruits.clusters.common.step_sensor import (
    AllDoneTeardown,
    poke_explained,
    start_waiting,
    watch_progress,
)
from fruits.clusters.serverless.request import driver_log_key, is_run_job, job_run
from fruits.storage.s3sync import split_uri

SETUP_SECONDS = 900  # an application's creation, start, stop or deletion: minutes at most
ENDED = ("TERMINATED",)
LIVE_APPLICATION_STATES = ("CREATING", "CREATED", "STARTING", "STARTED", "STOPPING", "STOPPED")


def waits(poke_interval: float, seconds: float = SETUP_SECONDS) -> dict[str, int]:
    """The provider's waiter settings for ``seconds`` at the sensors' pace (its default,
    25 x 60 s, is neither)."""
    delay = max(1, min(30, int(poke_interval)))
    return {"waiter_delay": delay, "waiter_max_attempts": math.ceil(seconds / delay)}


def token(*parts: str) -> str:
    """A client token the same for every try of one run's request (at most 64 chars)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:64]


class ServerlessApplicationOperator(EmrServerlessCreateApplicationOperator):
    """``create_job_flow``: creates the run's application from ``cluster["application"]``
    and starts it, or, when ``cluster["application_id"]`` names one
    (``FRUITS_SERVERLESS_APPLICATION_ID``), checks it is there and returns it: the run
    then neither stops nor deletes it."""

    template_fields: Sequence[str] = (
        *EmrServerlessCreateApplicationOperator.template_fields, "cluster",
    )  # fmt: skip

    def __init__(self, *, cluster: Any, **kwargs: Any):
        super().__init__(release_label="", job_type="SPARK", **kwargs)
        self.cluster = cluster

    def execute(self, context: Any) -> str | None:
        named = self.cluster.get("application_id")
        if named:
            app = self.hook.conn.get_application(applicationId=named)["application"]
            if app["state"] in ENDED:
                raise AirflowFailException(
                    f"FRUITS_SERVERLESS_APPLICATION_ID={named} is {app['state']}: set the id "
                    "of a live application, or leave it empty for one per run"
                )
            self.log.info("reusing application %s (%s); it stays as it is", named, app["state"])
            return named
        wanted = dict(self.cluster["application"])
        self.release_label = wanted.pop("releaseLabel")
        self.job_type = wanted.pop("type")
        self.config = wanted
        self.client_request_token = token("application", self.cluster["run_key"])
        return super().execute(context)


class ServerlessStartJobOperator(EmrServerlessStartJobOperator):
    """``add_steps`` (featurize) and ``add_reduce_step``: step ``index`` of the run's
    steps as one job run, returned at once (``wait_for_completion=False``: a sensor in
    reschedule mode waits, holding no worker slot)."""

    template_fields: Sequence[str] = (
        *EmrServerlessStartJobOperator.template_fields, "cluster", "steps",
    )  # fmt: skip

    def __init__(self, *, cluster: Any, steps: Any, index: int, **kwargs: Any):
        super().__init__(execution_role_arn="", job_driver={}, wait_for_completion=False,
                         **kwargs)  # fmt: skip
        self.cluster = cluster
        self.steps = steps
        self.index = index

    def execute(self, context: Any, event: dict[str, Any] | None = None) -> str | None:
        job = job_run(self.cluster, self.steps[self.index])
        self.name = job.pop("name")
        self.job_driver = job.pop("jobDriver")
        self.configuration_overrides = job.pop("configurationOverrides")
        self.config = job  # tags, executionTimeoutMinutes
        self.execution_role_arn = self.role_arn(self.cluster["job"]["execution_role"])
        self.client_request_token = token("job", self.cluster["run_key"], str(self.index))
        spark = self.job_driver["sparkSubmit"]
        self.log.info("job %s: %s %s", self.name, spark["entryPoint"],
                      " ".join(spark["entryPointArguments"]))  # fmt: skip
        return super().execute(context, event)

    def role_arn(self, role: str) -> str:
        """The job role's ARN: given, or looked up by name (which also says it exists)."""
        if role.startswith("arn:"):
            return role
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        iam_client = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="iam").conn
        return iam_client.get_role(RoleName=role)["Role"]["Arn"]


class ServerlessJobSensor(EmrServerlessJobSensor):
    """``wait_for_featurize`` and ``wait_for_step``: the provider's job sensor with the
    batch's timeout (:func:`~fruits.clusters.common.step_sensor.start_waiting`), the
    steps' progress lines and the stall rule (:func:`watch_progress`), and, when the job
    fails, its state details and the tail of the driver's stderr from the log URI."""

    template_fields: Sequence[str] = (
        *EmrServerlessJobSensor.template_fields, "timeout_seconds", "progress_uri", "log_uri",
    )  # fmt: skip

    def __init__(
        self,
        *,
        timeout_seconds: Any = None,
        progress_uri: Any = None,
        stall_seconds: float = 0,
        log_uri: str = "",
        log_wait: float = 300,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.timeout_seconds = timeout_seconds
        self.progress_uri = progress_uri
        self.stall_seconds = stall_seconds
        self.log_uri = log_uri
        self.log_wait = log_wait

    @property
    def cluster_id(self) -> str:  # what start_waiting names
        return self.application_id

    @property
    def step_ids(self) -> list[str]:
        return [self.job_run_id] if self.job_run_id else []

    def execute(self, context: Any) -> None:
        start_waiting(self)
        super().execute(context)

    def poke(self, context: Any) -> bool:
        done = poke_explained(self, lambda: super(ServerlessJobSensor, self).poke(context))
        if not done:
            watch_progress(self)
        return done

    def explain_failure(self) -> str:
        """The job's state and details, and the tail of its driver's stderr."""
        job = self.hook.conn.get_job_run(
            applicationId=self.application_id, jobRunId=self.job_run_id
        )["jobRun"]
        lines = [f"job run {self.job_run_id} ({job.get('name')}) is {job['state']}"]
        if job.get("stateDetails"):
            lines.append(f"EMR Serverless says: {job['stateDetails']}")
        if job["state"] != "FAILED":
            lines.append("the job did not fail by itself: no stderr of its own to show")
        else:
            uri = driver_log_key(self.log_uri, self.application_id, self.job_run_id, "stderr.gz")
            bucket, key = split_uri(uri)
            s3 = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
            lines.append(s3_log_tail(s3, bucket, key, self.log_wait, "EMR Serverless"))
        message = "\n".join(lines)
        self.log.error("%s", message)
        return message

    def on_kill(self) -> None:
        """A killed wait cancels its job (only this run's): nothing bills for a run that
        no one watches."""
        cancel(self.hook, self.application_id, [self.job_run_id], self.log)


def cancel(hook: EmrServerlessHook, application_id: str, job_ids: list[str], log: Any) -> None:
    for job_id in job_ids:
        try:
            hook.conn.cancel_job_run(applicationId=application_id, jobRunId=job_id)
            log.info("cancelled job run %s of %s", job_id, application_id)
        except Exception as exc:  # already ended, or gone with its application
            log.info("job run %s of %s not cancelled: %s", job_id, application_id, exc)


def unfinished_jobs(conn: Any, application_id: str) -> list[dict]:
    """The application's job runs that are not over yet (their summaries); none when the
    application is gone. ``conn``: boto3's EMR Serverless client."""
    from botocore.exceptions import ClientError

    states = sorted(EmrServerlessHook.JOB_INTERMEDIATE_STATES)
    jobs: list[dict] = []
    more: dict[str, str] = {}
    try:
        while True:
            page = conn.list_job_runs(applicationId=application_id, states=states, **more)
            jobs += page["jobRuns"]
            if not page.get("nextToken"):
                return jobs
            more = {"nextToken": page["nextToken"]}
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        return []


def live_applications(conn: Any) -> list[dict]:
    """Every application not terminated (their summaries)."""
    apps: list[dict] = []
    more: dict[str, str] = {}
    while True:
        page = conn.list_applications(states=list(LIVE_APPLICATION_STATES), **more)
        apps += page["applications"]
        if not page.get("nextToken"):
            return apps
        more = {"nextToken": page["nextToken"]}


def run_jobs(hook: EmrServerlessHook, application_id: str, run_key: str) -> list[str]:
    """The ids of this run's unfinished job runs (found by their names), never another's:
    on a shared application, other jobs go on."""
    jobs = unfinished_jobs(hook.conn, application_id)
    return [job["id"] for job in jobs if is_run_job(job["name"], run_key)]


def run_applications(hook: EmrServerlessHook, name: str) -> list[str]:
    """The live applications named ``name`` (the run's: its key is in the name)."""
    return sorted(a["id"] for a in live_applications(hook.conn) if a["name"] == name)


class ServerlessTeardownOperator(AllDoneTeardown, EmrServerlessDeleteApplicationOperator):
    """``remove_cluster``: cancels this run's unfinished job runs (found by the run key in
    their names), then, for an application the run created (found by its name, whatever
    ``create_job_flow`` managed to return), the provider's stop (``force_stop``) and
    delete. A named application (``FRUITS_SERVERLESS_APPLICATION_ID``) is left running,
    its other jobs untouched.

    Its trigger rule stays ``all_done`` when the DAG makes it the teardown, as the ec2
    backend's: it runs even when ``create_job_flow`` failed after creating."""

    template_fields: Sequence[str] = (
        *EmrServerlessDeleteApplicationOperator.template_fields, "cluster",
    )  # fmt: skip

    def __init__(self, *, cluster: Any, **kwargs: Any):
        super().__init__(application_id="", force_stop=True, **kwargs)
        self.cluster = cluster

    def execute(self, context: Any) -> list[str]:
        if not self.cluster:
            self.log.info("no application was planned: nothing to remove")
            return []
        run_key = self.cluster["run_key"]
        named = self.cluster.get("application_id")
        apps = (
            [named] if named else run_applications(self.hook, self.cluster["application"]["name"])
        )
        for app in apps:
            cancel(self.hook, app, run_jobs(self.hook, app, run_key), self.log)
        if named:
            self.log.info("application %s is not this run's: left running", named)
            return []
        for app in apps:
            self.application_id = app
            super().execute(context)  # stop (cancelling what still runs), then delete
        if not apps:
            self.log.info("no application of this run to remove")
        return apps
