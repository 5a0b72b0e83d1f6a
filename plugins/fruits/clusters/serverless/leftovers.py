"""What runs killed before their teardown left on EMR Serverless, cleared by the next run
(``clear_leftovers``, run while it holds the cluster slot and before it creates
anything, so every live application a run of this bucket created is a leftover, and
every unfinished job run this bucket's runs tagged on a named application too).

Applications the runs did not create (no run-key tag) are never stopped or deleted, and
other jobs on a named application are never cancelled.
"""

from __future__ import annotations

import logging
from typing import Any

from fruits.clusters.serverless.request import BUCKET_TAG, PROJECT_TAG, RUN_TAG
from fruits.settings import Settings


def ours(tags: dict[str, str] | None, bucket: str) -> bool:
    tags = tags or {}
    return tags.get(PROJECT_TAG[0]) == PROJECT_TAG[1] and tags.get(BUCKET_TAG) == bucket


def clear_leftovers(settings: Settings, hook: Any | None = None) -> dict[str, Any]:
    """Stop and delete this bucket's runs' live applications (application id -> its run
    key), and cancel this bucket's runs' unfinished jobs on the named application
    (``jobs``: their ids)."""
    from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook

    from fruits.clusters.serverless.operators import (
        LIVE_APPLICATION_STATES,
        cancel,
        unfinished_jobs,
    )

    hook = hook or EmrServerlessHook(aws_conn_id=settings.aws_conn_id)
    conn = hook.conn
    found: dict[str, Any] = {}
    pages = conn.get_paginator("list_applications").paginate(states=list(LIVE_APPLICATION_STATES))
    for app in [a for page in pages for a in page["applications"]]:
        tags = conn.get_application(applicationId=app["id"])["application"].get("tags")
        if not ours(tags, settings.bucket) or RUN_TAG not in tags:
            continue
        found[app["id"]] = tags[RUN_TAG]
        if app["state"] in ("CREATED", "STOPPED"):  # no job can run: delete it at once
            conn.delete_application(applicationId=app["id"])
            continue
        hook.cancel_running_jobs(app["id"], waiter_config={"Delay": 10, "MaxAttempts": 90})
        conn.stop_application(applicationId=app["id"])
        hook.get_waiter("serverless_app_stopped").wait(
            applicationId=app["id"], WaiterConfig={"Delay": 10, "MaxAttempts": 90}
        )
        conn.delete_application(applicationId=app["id"])
    named = settings.serverless.application_id
    if named:
        jobs = [
            job["id"]
            for job in unfinished_jobs(hook, named)
            if ours(conn.get_job_run(applicationId=named, jobRunId=job["id"])["jobRun"].get("tags"),
                    settings.bucket)
        ]  # fmt: skip
        cancel(hook, named, jobs, logging.getLogger(__name__))
        if jobs:
            found["jobs"] = sorted(jobs)
    return found
