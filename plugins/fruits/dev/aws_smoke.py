"""``make aws-smoke``: a tiny batch through the whole DAG on a real AWS account, then a
look for anything left billing, and a markdown report to paste into an issue.

Opt-in and never part of ``make test``: it spends money. It refuses to start without
explicit settings (a cloud backend, the bucket, a region, the backend's network), or
when the connection points anywhere but AWS (moto, MinIO), and it states the cost
before it asks. It has never run on a real account (there is none where it was
written): its pieces are tested on moto (tests/plugins/fruits/dev/). The cost is
``aws_smoke_cost``'s, the leftovers and the report ``aws_smoke_report``'s.

    python -m fruits.dev.aws_smoke [--yes] [--weights random] [--date 2000-01-01]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fruits.dev.aws_smoke_cost import cost_lines
from fruits.dev.aws_smoke_report import (
    billing,
    find_leftovers,
    public_settings,
    report,
    settle,
    versions,
)
from fruits.settings import PROJECT_ROOT, Settings

DAG_ID = "fruits_pipeline"
# A date no real batch has: the smoke's outputs never replace a real batch's.
SMOKE_DATE = "2000-01-01"
PER_LABEL = 4  # 6 labels x 4 images: a batch that costs nothing to featurize
WORK = PROJECT_ROOT / "var" / "aws-smoke"  # the run's log, report and Airflow home
SETTLE_SECONDS = 300  # how long a torn-down cluster may take to reach terminated

# What each cloud backend needs besides FRUITS_BUCKET and a region (docs/deploy-aws.md);
# EMR Serverless, once built, gets its entry here (its leftovers are already looked for).
NETWORK = {
    "emr": ("FRUITS_EMR_SUBNET",),
    "ec2": ("FRUITS_EC2_SUBNET", "FRUITS_EC2_SECURITY_GROUP"),
}


# --- refusing to start -----------------------------------------------------------------


def connection_extra(conn_id: str, env: Mapping[str, str]) -> dict[str, Any] | None:
    """The extras of the Airflow connection ``conn_id``: from ``AIRFLOW_CONN_<ID>`` (JSON or
    URI), else, with AIRFLOW_HOME set (the run then uses that Airflow), from its secrets
    and database; None when it is not defined. Without AIRFLOW_HOME the run gets an
    Airflow home of its own, which knows only the environment's connections."""
    from airflow.models.connection import Connection

    raw = env.get(f"AIRFLOW_CONN_{conn_id.upper()}", "").strip()
    if not raw and not env.get("AIRFLOW_HOME"):
        return None
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
            f"{conn_id.upper()}, or AIRFLOW_HOME to an Airflow that has it (docs/deploy-aws.md)"
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
    """``airflow tasks states-for-dag-run -o json``'s rows as task, state, seconds: the
    first JSON list of rows in ``text`` (log lines may come before it)."""
    rows: list[dict[str, Any]] = []
    for start in (m.start() for m in re.finditer(r"^\s*\[", text, re.M)):
        try:
            found, _ = json.JSONDecoder().raw_decode(text[start:].lstrip())
        except ValueError:
            continue
        if isinstance(found, list) and all(isinstance(r, dict) and "task_id" in r for r in found):
            rows = found
            break
    out = []
    for row in rows:
        seconds = None
        if row.get("start_date") and row.get("end_date"):
            began = dt.datetime.fromisoformat(row["start_date"])
            seconds = (dt.datetime.fromisoformat(row["end_date"]) - began).total_seconds()
        out.append({"task_id": row["task_id"], "state": row.get("state") or "none",
                    "seconds": seconds})  # fmt: skip
    return out


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


def _clients(conn_id: str, region: str) -> tuple[Any, Any, Any]:
    """EMR, EC2 and EMR Serverless clients with your shell's credentials when it has some:
    the pipeline's role may not list clusters (its grants follow what the DAG does);
    else the connection's."""
    import boto3

    session = boto3.Session(region_name=region)
    if session.get_credentials() is None:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        session = AwsBaseHook(aws_conn_id=conn_id).get_session(region_name=region)
    return session.client("emr"), session.client("ec2"), session.client("emr-serverless")


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


def _task_states(date: str, env: Mapping[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "tasks", "states-for-dag-run", DAG_ID, date,
         "-o", "json"], env=dict(env), capture_output=True, text=True, check=False,
    )  # fmt: skip
    return parse_task_states(done.stdout)


def _checked(env: Mapping[str, str]) -> tuple[Settings, dict[str, Any]] | list[str]:
    """The settings and the connection's extras, or why the smoke must not start."""
    from fruits.settings import ConfigError, load_settings

    conn_id = env.get("FRUITS_AWS_CONN_ID", "").strip() or "aws_default"
    extra = connection_extra(conn_id, env)
    problems = refusals(env, extra)
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        problems.append(str(exc))
    return problems or (settings, extra or {})


def run_smoke(
    args: argparse.Namespace, settings: Settings, env: Mapping[str, str], extra: Mapping
) -> dict[str, Any]:
    """Write the batch, run the DAG, look for leftovers: the report's result."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "dags-test.log"
    log.write_text("")
    started, t0 = dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), time.monotonic()
    hook = S3Hook(settings.source_conn_id)
    upload = lambda path, bucket, key: hook.load_file(str(path), key, bucket, replace=True)  # noqa: E731
    where = write_sample(settings, args.date, args.per_label, upload)
    print(f"batch written to {where}; running the DAG (log: {log})")
    weights = args.weights or settings.weights
    run = run_env(env, incoming=settings.incoming, weights=weights)
    _logged([sys.executable, "-m", "airflow", "db", "migrate"], run, log)
    returncode = _logged(dag_test_command(args.date), run, log)
    emr, ec2, serverless = _clients(settings.aws_conn_id, region_of(env, extra))
    leftovers = settle(
        lambda: find_leftovers(emr, ec2, serverless, bucket=settings.bucket), wait=SETTLE_SECONDS
    )
    outputs = _outputs(settings, args.date)
    return {
        # a run that published nothing (no batch found, say) proves nothing either
        "succeeded": returncode == 0 and outputs is not None and not billing(leftovers),
        "started": started,
        "total_seconds": time.monotonic() - t0,
        "date": args.date,
        "images": len(_labels()) * args.per_label,
        "weights": weights,
        "versions": versions(),
        "region": region_of(env, extra),
        "backend": settings.compute,
        "settings": public_settings(run),
        "tasks": _task_states(args.date, run),
        "outputs": outputs,
        "leftovers": leftovers,
        "log": str(log),
    }


def _labels() -> list[str]:
    from fruits.dev.sample_batch import FRUITS

    return list(FRUITS)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = dict(os.environ)
    checked = _checked(env)
    if isinstance(checked, list):
        print("aws-smoke will not start:\n" + "\n".join(f"  - {p}" for p in checked),
              file=sys.stderr)  # fmt: skip
        return 2
    settings, extra = checked
    images = len(_labels()) * args.per_label
    weights = args.weights or settings.weights
    print("\n".join(cost_lines(settings, images)))
    print(f"It writes a {images}-image batch for {args.date} to {settings.incoming}, runs "
          f"`airflow dags test {DAG_ID} {args.date}` (weights {weights}: imagenet must be "
          f"staged with `make stage-weights`) and publishes s3://{settings.bucket}/runs/"
          f"batch={args.date}/.")  # fmt: skip
    if not args.yes and not _confirmed():
        print("not started")
        return 1
    result = run_smoke(args, settings, env, extra)
    text = report(result)
    (WORK / "report.md").write_text(text)
    print(f"\n{text}\n(also in {WORK / 'report.md'}; the run's log: {result['log']})")
    return 0 if result["succeeded"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
