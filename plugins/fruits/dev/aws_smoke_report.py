"""After a ``make aws-smoke`` run: what is left alive (and billing), and the run as a
markdown report a user can paste into an issue, with no secret in it."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from fruits.clusters.ec2.instances import BUCKET_TAG, CLUSTER_TAG, PROJECT_TAG
from fruits.settings import PROJECT_ROOT

LIVE_EMR = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING"]
LIVE_SERVERLESS = ["CREATING", "CREATED", "STARTING", "STARTED", "STOPPING", "STOPPED"]
SECRET = re.compile(r"SECRET|PASSWORD|TOKEN|CREDENTIAL|KEY", re.I)
ACCOUNT = re.compile(r"(?<!\d)\d{12}(?!\d)")
NOT_CHECKED = "not checked: "  # a leftover line for a service the credentials may not list


def _emr_clusters(emr: Any, key: str, value: str) -> list[str]:
    found = []
    for page in emr.get_paginator("list_clusters").paginate(ClusterStates=LIVE_EMR):
        for summary in page["Clusters"]:
            cluster = emr.describe_cluster(ClusterId=summary["Id"])["Cluster"]
            if {t["Key"]: t["Value"] for t in cluster.get("Tags", [])}.get(key) == value:
                state = cluster["Status"]["State"]
                found.append(f"EMR cluster {cluster['Id']} ({cluster['Name']}, {state})")
    return found


def _ec2_instances(ec2: Any, key: str, value: str, bucket: str) -> list[str]:
    found = []
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": f"tag:{key}", "Values": [value]},
        {"Name": f"tag:{BUCKET_TAG}", "Values": [bucket]},
    ])  # fmt: skip
    for page in pages:
        for inst in (i for r in page["Reservations"] for i in r["Instances"]):
            state = inst["State"]["Name"]
            if state != "terminated":
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                found.append(f"EC2 instance {inst['InstanceId']} ({inst['InstanceType']}, "
                             f"{state}, {CLUSTER_TAG}={tags.get(CLUSTER_TAG, '?')})")  # fmt: skip
    return found


def _serverless_applications(serverless: Any, key: str, value: str) -> list[str]:
    found = []
    for page in serverless.get_paginator("list_applications").paginate(states=LIVE_SERVERLESS):
        for app in page["applications"]:
            got = serverless.get_application(applicationId=app["id"])["application"]
            if got.get("tags", {}).get(key) == value:
                found.append(f"EMR Serverless application {app['id']} ({app['name']}, "
                             f"{app['state']})")  # fmt: skip
    return found


def find_leftovers(emr: Any, ec2: Any, serverless: Any | None, *, bucket: str) -> list[str]:
    """Everything of this project still alive: EMR clusters and EMR Serverless
    applications tagged ``project=fruits-pipeline``, EC2 instances tagged so and with this
    bucket (as the ec2 backend tags them) that are not terminated. One line each; a
    service the credentials may not list gives a :data:`NOT_CHECKED` line instead of
    stopping the others."""
    from botocore.exceptions import BotoCoreError, ClientError

    key, value = PROJECT_TAG["Key"], PROJECT_TAG["Value"]
    looks: list[tuple[str, Callable[[], list[str]]]] = [
        ("EMR clusters", lambda: _emr_clusters(emr, key, value)),
        ("EC2 instances", lambda: _ec2_instances(ec2, key, value, bucket)),
    ]
    if serverless is not None:
        looks.append(("EMR Serverless applications",
                      lambda: _serverless_applications(serverless, key, value)))  # fmt: skip
    found = []
    for what, look in looks:
        try:
            found += look()
        except (BotoCoreError, ClientError) as exc:
            found.append(f"{NOT_CHECKED}{what} ({exc}): look by hand")
    return found


def billing(found: list[str]) -> list[str]:
    """The leftovers that were seen alive (not the services left unchecked)."""
    return [item for item in found if not item.startswith(NOT_CHECKED)]


def settle(look: Callable[[], list[str]], *, wait: float = 300, every: float = 15) -> list[str]:
    """``look()`` until it finds nothing alive or ``wait`` seconds have passed: a cluster
    just torn down takes a minute or two to reach terminated."""
    deadline = time.monotonic() + wait
    found = look()
    while billing(found) and time.monotonic() < deadline:
        time.sleep(every)
        found = look()
    return found


# --- the report ------------------------------------------------------------------------


def public_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The settings a report may show: FRUITS_* and the region, secrets and account ids
    hidden."""
    shown = {}
    for name in sorted(env):
        if name.startswith("FRUITS_") or name == "AWS_DEFAULT_REGION":
            value = "<hidden>" if SECRET.search(name) else ACCOUNT.sub("<account>", env[name])
            shown[name] = value
    return shown


def versions() -> dict[str, str]:
    """Airflow's, the Amazon provider's and this checkout's commit (``+dirty`` if changed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for label, dist in (("Airflow", "apache-airflow"),
                        ("Amazon provider", "apache-airflow-providers-amazon")):  # fmt: skip
        try:
            found[label] = version(dist)
        except PackageNotFoundError:
            found[label] = "not installed"

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True,
                              text=True, timeout=30)  # fmt: skip
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    found["fruits-pipeline"] = (commit + ("+dirty" if git("status", "--porcelain") else "")) or (
        "unknown (not a git checkout)"
    )
    found["Python"] = sys.version.split()[0]
    return found


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def report(result: Mapping[str, Any]) -> str:
    """The run as markdown, for an issue: versions, region, backend, settings, each task's
    state and duration, outputs, leftovers, total time."""
    outcome = "succeeded" if result["succeeded"] else "FAILED"
    lines = [f"### fruits-pipeline AWS smoke run: {outcome}", "",
             f"Started {result['started']}, total {_duration(result['total_seconds'])}; "
             f"batch {result['date']} ({result['images']} images), weights {result['weights']}.",
             "", "| | |", "|---|---|"]  # fmt: skip
    lines += [f"| {k} | {v} |" for k, v in result["versions"].items()]
    lines += [f"| region | {result['region']} |", f"| backend | {result['backend']} |", ""]
    lines += ["Settings (secrets and account ids hidden):", "", "```"]
    lines += [f"{k}={v}" for k, v in result["settings"].items()] + ["```", ""]
    lines += ["| task | state | duration |", "|---|---|---|"]
    lines += [f"| {t['task_id']} | {t['state']} | {_duration(t['seconds'])} |"
              for t in result["tasks"]] or ["| (no task ran) | | |"]  # fmt: skip
    out = result.get("outputs")
    lines += ["", "Outputs: " + (
        f"{out['rows']} rows, k={out['k']}, {out['rejected']} rejected" if out
        else "none published"), ""]  # fmt: skip
    alive = billing(result["leftovers"])
    lines.append("Leftovers: " + (f"{len(alive)}, STILL BILLING" if alive else "none"))
    lines += [f"- {item}" for item in result["leftovers"]]
    return "\n".join(lines) + "\n"
