"""``make aws-smoke``: a tiny batch through the whole DAG on a real AWS account, then a
look for anything left billing, and a markdown report to paste into an issue.

Opt-in and never part of ``make test``: it spends money. It refuses to start without
explicit settings (a cloud backend, the bucket, a region, the backend's network), or
when the connection points anywhere but AWS (moto, MinIO), and it states the cost
before it asks. It has never run on a real account (there is none where it was
written): its pieces are tested on moto (tests/plugins/fruits/dev/test_aws_smoke.py).

    python -m fruits.dev.aws_smoke [--yes] [--weights random] [--date 2000-01-01]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruits.clusters.ec2.instances import BUCKET_TAG, CLUSTER_TAG, PROJECT_TAG
from fruits.settings import PROJECT_ROOT, Settings

DAG_ID = "fruits_pipeline"
# A date no real batch has: the smoke's outputs never replace a real batch's.
SMOKE_DATE = "2000-01-01"
PER_LABEL = 4  # 6 labels x 4 images: a batch that costs nothing to featurize
WORK = PROJECT_ROOT / "var" / "aws-smoke"  # the run's log, report and Airflow home

# What each cloud backend needs besides FRUITS_BUCKET and a region (docs/deploy-aws.md).
NETWORK = {
    "emr": ("FRUITS_EMR_SUBNET",),
    "ec2": ("FRUITS_EC2_SUBNET", "FRUITS_EC2_SECURITY_GROUP"),
}

# Prices: assumptions, not quotes. On-demand Linux, us-east-1, USD per instance-hour;
# m5.xlarge, the EMR fee and the spot discount as bench/emr_estimate.py assumes them.
EC2_USD_PER_HOUR = {
    "m5.large": 0.096, "m5.xlarge": 0.192, "m5.2xlarge": 0.384, "m5.4xlarge": 0.768,
    "m6i.xlarge": 0.192, "m6i.2xlarge": 0.384, "m7i.xlarge": 0.2016,
    "m6g.xlarge": 0.154, "m7g.xlarge": 0.1632, "c5.xlarge": 0.17, "c5.2xlarge": 0.34,
    "r5.xlarge": 0.252,
}  # fmt: skip
EMR_FEE_SHARE = 0.25  # EMR's fee on top of EC2's price (m5.xlarge: $0.048 on $0.192)
SPOT_DISCOUNT = 0.60  # spot nodes, off on-demand: varies by region, zone and hour
FIXED_MINUTES = 12.0  # cluster start, bootstrap or boot installs, teardown (bench's figure)
TINY_BATCH_MINUTES = 3.0  # two spark-submits of a tiny batch, their start-up included
ASSUMPTIONS = (
    "prices are us-east-1 on-demand Linux (other regions differ); EMR's fee is taken as "
    f"{EMR_FEE_SHARE:.0%} of the EC2 price; spot as {SPOT_DISCOUNT:.0%} off; every node "
    f"is billed per second for the cluster's whole life; {FIXED_MINUTES:.0f} min of "
    f"start-up and teardown plus {TINY_BATCH_MINUTES:.0f} min of steps (bench/emr_estimate.py"
    "'s assumptions, not measured on AWS); EBS, S3 requests, NAT and data transfer not counted"
)

LIVE_EMR = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING"]
LIVE_SERVERLESS = ["CREATING", "CREATED", "STARTING", "STARTED", "STOPPING", "STOPPED"]
SECRET = re.compile(r"SECRET|PASSWORD|TOKEN|CREDENTIAL|KEY", re.I)
ACCOUNT = re.compile(r"(?<!\d)\d{12}(?!\d)")


# --- refusing to start -----------------------------------------------------------------


def connection_extra(conn_id: str, env: Mapping[str, str]) -> dict[str, Any] | None:
    """The extras of the Airflow connection ``conn_id``: from ``AIRFLOW_CONN_<ID>`` (JSON or
    URI), else from Airflow's secrets and database; None when it is not defined."""
    from airflow.models.connection import Connection

    raw = env.get(f"AIRFLOW_CONN_{conn_id.upper()}", "").strip()
    try:
        if raw:
            conn = (
                Connection.from_json(raw, conn_id)
                if raw.startswith("{")
                else Connection(conn_id=conn_id, uri=raw)
            )
        else:
            conn = Connection.get_connection_from_secrets(conn_id)
    except Exception:  # not defined anywhere, or no database to look in
        return None
    return conn.extra_dejson


def region_of(env: Mapping[str, str], extra: Mapping[str, Any] | None) -> str:
    """The region the hooks use: the connection's ``region_name``, else AWS_DEFAULT_REGION."""
    return str((extra or {}).get("region_name") or env.get("AWS_DEFAULT_REGION", "")).strip()


def refusals(env: Mapping[str, str], extra: Mapping[str, Any] | None) -> list[str]:
    """Why the smoke must not start, one line per problem; empty when it may. Nothing is
    taken from a default: a smoke run against the wrong place costs money or proves
    nothing."""
    problems = []
    compute = env.get("FRUITS_COMPUTE", "").strip().lower()
    if compute not in NETWORK:
        problems.append(
            f"FRUITS_COMPUTE={compute!r}: set it to one of {', '.join(NETWORK)}"
            if compute
            else f"FRUITS_COMPUTE is not set: choose {' or '.join(NETWORK)}"
        )
    if not env.get("FRUITS_BUCKET", "").strip():
        problems.append("FRUITS_BUCKET is not set: the stack's BucketName output")
    conn_id = env.get("FRUITS_AWS_CONN_ID", "").strip() or "aws_default"
    if extra is None:
        problems.append(
            f"the Airflow connection {conn_id} is not defined: set AIRFLOW_CONN_"
            f"{conn_id.upper()} (docs/deploy-aws.md)"
        )
    if not region_of(env, extra):
        problems.append(f"no region: set region_name in {conn_id}'s extras or AWS_DEFAULT_REGION")
    for name in NETWORK.get(compute, ()):
        if not env.get(name, "").strip():
            problems.append(f"{name} is not set: the {compute} backend needs it")
    endpoints = {"connection endpoint_url": (extra or {}).get("endpoint_url", "")}
    endpoints |= {k: v for k, v in env.items() if k.startswith("AWS_ENDPOINT_URL")}
    for where, url in endpoints.items():
        if url:
            problems.append(f"{where}={url}: the smoke runs against AWS itself, not moto or MinIO")
    if env.get("AWS_ACCESS_KEY_ID") == "testing":
        problems.append("AWS_ACCESS_KEY_ID=testing is moto's: use your account's credentials")
    return problems


# --- what it will cost -----------------------------------------------------------------


@dataclass(frozen=True)
class Nodes:
    role: str
    instance_type: str
    count: int
    spot: bool = False


def nodes(settings: Settings) -> list[Nodes]:
    """The instances the chosen backend launches, from the settings."""
    if settings.compute == "emr":
        emr = settings.emr
        groups = [
            Nodes("primary", emr.master_type, 1),
            Nodes("core", emr.core_type, emr.core_count),
            Nodes("task", emr.task_type, emr.task_spot_count, spot=True),
        ]
    else:
        ec2 = settings.ec2
        groups = [
            Nodes("primary", ec2.primary_type, 1),
            Nodes("worker", ec2.worker_type, ec2.worker_count, spot=ec2.worker_spot),
        ]
    return [g for g in groups if g.count > 0]


def hourly(node: Nodes, compute: str) -> float | None:
    """USD per hour of one instance of ``node``; None when the table has no price."""
    price = EC2_USD_PER_HOUR.get(node.instance_type)
    if price is None:
        return None
    fee = price * EMR_FEE_SHARE if compute == "emr" else 0.0  # EMR bills its fee on spot too
    return price * (1 - SPOT_DISCOUNT if node.spot else 1) + fee


def worst_minutes(settings: Settings, n_images: int) -> float:
    """How long a cluster lives if the teardown never runs: EMR's idle timeout after the
    steps; an ec2 node's shutdown timer (ready timeout + steps' timeout + 30 min)."""
    if settings.compute == "emr":
        return FIXED_MINUTES + TINY_BATCH_MINUTES + settings.emr.idle_timeout / 60
    timeout = settings.step_timeout(n_images)
    return math.ceil((settings.ec2.ready_timeout + timeout) / 60) + 30


def cost_lines(settings: Settings, n_images: int) -> list[str]:
    """What the run will cost, from the settings and the price table (estimates)."""
    minutes = FIXED_MINUTES + TINY_BATCH_MINUTES
    lines = [f"Cost of this smoke run on {settings.compute} (an estimate, not a quote):"]
    per_hour, unpriced = 0.0, []
    for node in nodes(settings):
        price = hourly(node, settings.compute)
        market = "spot" if node.spot else "on-demand"
        shown = f"${price:.3f}/h each" if price is not None else "no price in the table"
        lines.append(
            f"  {node.role:<8} {node.count} x {node.instance_type:<11} {market:<9} {shown}"
        )
        if price is None:
            unpriced.append(node.instance_type)
        else:
            per_hour += price * node.count
    at_least = "at least " if unpriced else ""
    count = sum(n.count for n in nodes(settings))
    lines.append(f"  total    {count} instances, {at_least}${per_hour:.2f}/h; expected "
                 f"~{minutes:.0f} min: {at_least}~${per_hour * minutes / 60:.2f}")  # fmt: skip
    worst = worst_minutes(settings, n_images)
    lines.append(f"  if the teardown never ran, the cluster would end itself after ~{worst:.0f} "
                 f"min: {at_least}~${per_hour * worst / 60:.2f}")  # fmt: skip
    if unpriced:
        lines.append(f"  look up the price of {', '.join(sorted(set(unpriced)))} yourself")
    lines.append(f"  assumptions: {ASSUMPTIONS}")
    return lines


# --- the run ---------------------------------------------------------------------------


def run_env(env: Mapping[str, str], *, incoming: str, weights: str) -> dict[str, str]:
    """The DAG run's environment: the caller's, the batch's source and the weights; an
    Airflow home of its own (SQLite, this checkout's DAG) unless AIRFLOW_HOME is set."""
    out = {**env, "FRUITS_INCOMING": incoming, "FRUITS_WEIGHTS": weights}
    out.setdefault("FRUITS_POKE_INTERVAL", "30")  # a tiny batch: look at the steps often
    if not env.get("AIRFLOW_HOME"):
        out |= {
            "AIRFLOW_HOME": str(WORK / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    return out


def dag_test_command(date: str) -> list[str]:
    """The DAG run, as ``make demo`` runs it: every task in one process, no scheduler."""
    return [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, date]


def write_sample(settings: Settings, date: str, per_label: int, upload: Callable | None) -> str:
    """A sample batch for ``date`` in FRUITS_INCOMING (a folder, or ``s3://`` through
    ``upload(path, bucket, key)``); returns where it is."""
    from fruits.dev.sample_batch import write_batch

    if not settings.incoming.startswith("s3://"):
        write_batch(Path(settings.incoming) / date, per_label)
        return f"{settings.incoming}/{date}"
    bucket, _, prefix = settings.incoming.removeprefix("s3://").partition("/")
    base = f"{prefix}/{date}" if prefix else date
    with tempfile.TemporaryDirectory() as tmp:
        for path in write_batch(Path(tmp), per_label):
            upload(path, bucket, f"{base}/{path.relative_to(tmp).as_posix()}")
    return f"s3://{bucket}/{base}"


def parse_task_states(text: str) -> list[dict[str, Any]]:
    """``airflow tasks states-for-dag-run -o json``'s rows as task, state, seconds."""
    start = text.find("[")
    rows, _ = json.JSONDecoder().raw_decode(text[start:]) if start >= 0 else ([], 0)
    out = []
    for row in rows:
        seconds = None
        if row.get("start_date") and row.get("end_date"):
            began = dt.datetime.fromisoformat(row["start_date"])
            seconds = (dt.datetime.fromisoformat(row["end_date"]) - began).total_seconds()
        out.append({"task_id": row["task_id"], "state": row.get("state") or "none",
                    "seconds": seconds})  # fmt: skip
    return out


# --- nothing left behind ---------------------------------------------------------------


def find_leftovers(emr: Any, ec2: Any, serverless: Any | None, *, bucket: str) -> list[str]:
    """Everything of this project still alive: EMR clusters and EMR Serverless
    applications tagged ``project=fruits-pipeline``, EC2 instances tagged so and with this
    bucket (as the ec2 backend tags them) that are not terminated. One line each."""
    key, value = PROJECT_TAG["Key"], PROJECT_TAG["Value"]
    found = []
    for page in emr.get_paginator("list_clusters").paginate(ClusterStates=LIVE_EMR):
        for summary in page["Clusters"]:
            cluster = emr.describe_cluster(ClusterId=summary["Id"])["Cluster"]
            if {t["Key"]: t["Value"] for t in cluster.get("Tags", [])}.get(key) == value:
                state = cluster["Status"]["State"]
                found.append(f"EMR cluster {cluster['Id']} ({cluster['Name']}, {state})")
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
    if serverless is not None:
        for page in serverless.get_paginator("list_applications").paginate(states=LIVE_SERVERLESS):
            for app in page["applications"]:
                got = serverless.get_application(applicationId=app["id"])["application"]
                if got.get("tags", {}).get(key) == value:
                    found.append(f"EMR Serverless application {app['id']} ({app['name']}, "
                                 f"{app['state']})")  # fmt: skip
    return found


def settle(look: Callable[[], list[str]], *, wait: float = 300, every: float = 15) -> list[str]:
    """``look()`` until it finds nothing or ``wait`` seconds have passed: a cluster just
    torn down takes a minute or two to reach terminated."""
    deadline = time.monotonic() + wait
    found = look()
    while found and time.monotonic() < deadline:
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
    leftovers = result["leftovers"]
    lines.append("Leftovers: " + ("none" if not leftovers else f"{len(leftovers)}, STILL BILLING"))
    lines += [f"- {item}" for item in leftovers]
    return "\n".join(lines) + "\n"


# --- the command -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fruits.dev.aws_smoke",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("--yes", action="store_true", help="start without asking")
    p.add_argument("--weights", help="imagenet (staged: make stage-weights), random, or a URI; "
                   "default: FRUITS_WEIGHTS")  # fmt: skip
    p.add_argument("--date", default=SMOKE_DATE, help="the batch date (default: %(default)s)")
    p.add_argument("--per-label", type=int, default=PER_LABEL)
    return p.parse_args(argv)


def _clients(conn_id: str) -> tuple[Any, Any, Any]:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return tuple(AwsBaseHook(aws_conn_id=conn_id, client_type=kind).get_conn()
                 for kind in ("emr", "ec2", "emr-serverless"))  # fmt: skip


def _outputs(settings: Settings, date: str) -> dict[str, Any] | None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from fruits.storage.publish import run_summary

    try:
        return run_summary(S3Hook(settings.aws_conn_id), settings.bucket, date, require_marker=True)
    except Exception as exc:  # not published: the report says none
        print(f"no outputs: {exc}", file=sys.stderr)
        return None


def _logged(command: list[str], env: Mapping[str, str], log: Path) -> int:
    with log.open("a") as out:
        return subprocess.run(command, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                              check=False).returncode  # fmt: skip


def _confirmed() -> bool:
    try:
        return input("Start it? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:  # no terminal to ask (CI, a pipe): only --yes starts it
        return False


def main(argv: Sequence[str] | None = None) -> int:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from fruits.settings import ConfigError, load_settings

    args = parse_args(argv)
    env = dict(os.environ)
    conn_id = env.get("FRUITS_AWS_CONN_ID", "").strip() or "aws_default"
    extra = connection_extra(conn_id, env)
    problems = refusals(env, extra)
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        problems.append(str(exc))
    if problems:
        print("aws-smoke will not start:\n" + "\n".join(f"  - {p}" for p in problems),
              file=sys.stderr)  # fmt: skip
        return 2
    from fruits.dev.sample_batch import FRUITS

    images = len(FRUITS) * args.per_label
    weights = args.weights or settings.weights
    print("\n".join(cost_lines(settings, images)))
    print(f"It writes a {images}-image batch for {args.date} to {settings.incoming}, runs "
          f"`airflow dags test {DAG_ID} {args.date}` (weights {weights}: imagenet must be "
          f"staged with `make stage-weights`) and publishes s3://{settings.bucket}/runs/"
          f"batch={args.date}/.")  # fmt: skip
    if not args.yes and not _confirmed():
        print("not started")
        return 1
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "dags-test.log"
    log.write_text("")
    started, t0 = dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), time.monotonic()
    hook = S3Hook(settings.source_conn_id)
    upload = lambda path, bucket, key: hook.load_file(str(path), key, bucket, replace=True)  # noqa: E731
    where = write_sample(settings, args.date, args.per_label, upload)
    print(f"batch written to {where}; running the DAG (log: {log})")
    run = run_env(env, incoming=settings.incoming, weights=weights)
    _logged([sys.executable, "-m", "airflow", "db", "migrate"], run, log)
    returncode = _logged(dag_test_command(args.date), run, log)
    states = subprocess.run(
        [sys.executable, "-m", "airflow", "tasks", "states-for-dag-run", DAG_ID, args.date,
         "-o", "json"], env=run, capture_output=True, text=True, check=False,
    )  # fmt: skip
    tasks = parse_task_states(states.stdout)
    emr, ec2, serverless = _clients(conn_id)
    leftovers = settle(lambda: find_leftovers(emr, ec2, serverless, bucket=settings.bucket))
    result = {
        "succeeded": returncode == 0 and not leftovers,
        "started": started,
        "total_seconds": time.monotonic() - t0,
        "date": args.date,
        "images": images,
        "weights": weights,
        "versions": versions(),
        "region": region_of(env, extra),
        "backend": settings.compute,
        "settings": public_settings(run),
        "tasks": tasks,
        "outputs": _outputs(settings, args.date),
        "leftovers": leftovers,
    }
    text = report(result)
    (WORK / "report.md").write_text(text)
    print(f"\n{text}\n(also in {WORK / 'report.md'}; the run's log: {log})")
    return 0 if result["succeeded"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
