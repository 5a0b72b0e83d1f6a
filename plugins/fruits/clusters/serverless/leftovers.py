"""What runs killed before their teardown left on EMR Serverless, cleared by the next run
(``clear_leftovers``, run while it holds the cluster slot and before it creates
anything, so every live application a run of this bucket created is a leftover, and
every unfinished job run this bucket's runs tagged on a named application too).

Applications the runs did not create (no run-key tag) are never stopped or deleted, and
other jobs on a named application are never cancelled.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fruits.clusters.serverless.request import BUCKET_TAG, PROJECT_TAG, RUN_TAG
from fruits.settings import Settings

POLL_SECONDS = 10


def ours(tags: dict[str, str] | None, bucket: str) -> bool:
    tags = tags or {}
    return tags.get(PROJECT_TAG[0]) == PROJECT_TAG[1] and tags.get(BUCKET_TAG) == bucket


def clear_leftovers(settings: Settings, hook: Any | None = None) -> dict[str, Any]:
    """Stop and delete this bucket's runs' live applications (application id -> its run
    key), and cancel this bucket's runs' unfinished jobs on the named application
    (``jobs``: their ids)."""
    from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook

    from fruits.clusters.serverless.operators import cancel, live_applications, unfinished_jobs

    hook = hook or EmrServerlessHook(aws_conn_id=settings.aws_conn_id)
    conn = hook.conn
    log = logging.getLogger(__name__)
    found: dict[str, Any] = {}
    for app in live_applications(conn):
        tags = conn.get_application(applicationId=app["id"])["application"].get("tags")
        if ours(tags, settings.bucket) and RUN_TAG in tags:
            found[app["id"]] = tags[RUN_TAG]
            remove_application(hook, app["id"], log)
    named = settings.serverless.application_id
    if named:
        jobs = [
            job["id"]
            for job in unfinished_jobs(conn, named)
            if tagged_ours(conn, named, job, settings.bucket)
        ]
        cancel(hook, named, jobs, log)
        if jobs:
            found["jobs"] = sorted(jobs)
    return found


def tagged_ours(conn: Any, application_id: str, job: dict, bucket: str) -> bool:
    """A job run carries this bucket's tags; a job the Airflow role may not read (another
    team's, untagged, on a shared application) is not ours."""
    from botocore.exceptions import ClientError

    from fruits.clusters.common.preflight import DENIED, error_code

    try:
        got = conn.get_job_run(applicationId=application_id, jobRunId=job["id"])["jobRun"]
    except ClientError as exc:
        if error_code(exc) in DENIED:
            return False
        raise
    return ours(got.get("tags"), bucket)


def remove_application(hook: Any, application_id: str, log: Any, polls: int = 90) -> None:
    """Cancel the application's unfinished jobs, stop it, delete it: the teardown's work
    for an application whose run is gone (every job on it was that run's)."""
    from fruits.clusters.serverless.operators import cancel, unfinished_jobs

    conn = hook.conn
    for _ in range(polls):
        jobs = unfinished_jobs(conn, application_id)
        if not jobs:
            break
        cancel(hook, application_id, [j["id"] for j in jobs], log)
        time.sleep(POLL_SECONDS)
    state = conn.get_application(applicationId=application_id)["application"]["state"]
    if state not in ("CREATED", "STOPPED"):  # the only states delete accepts
        if state != "STOPPING":
            conn.stop_application(applicationId=application_id)
        for _ in range(polls):
            app = conn.get_application(applicationId=application_id)["application"]
            if app["state"] == "STOPPED":
                break
            time.sleep(POLL_SECONDS)
    conn.delete_application(applicationId=application_id)
    log.info("application %s of a killed run: stopped and deleted", application_id)
