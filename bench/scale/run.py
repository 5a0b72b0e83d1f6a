"""The scale bench, in order: write the batches, start moto and a fresh Airflow home,
run the DAG once per batch (the scale sizes, then the small daily batches), measure
each run, check its outputs, print the tables, write ``bench/scale-results.json``.

Each run is measured from what the run leaves behind, never from timers around its
parts: Airflow's database gives the tasks' and the DAG run's durations, the run summary
(``fruits.storage.publish.run_summary``, read back from moto) the steps' own durations,
the published Parquet the completeness check. Only the memory is watched live
(:mod:`bench.scale.process_memory`), and the subprocess's wall time taken.

Exits 1 when a run fails or a batch comes out incomplete (after printing what was
measured and writing the JSON), 0 otherwise.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable
from datetime import date, timedelta
from importlib import metadata as dist
from pathlib import Path
from typing import Any

from bench.scale import metadata
from bench.scale.batch import BatchInfo, expected_outputs, generate_batch
from bench.scale.completeness import check, published_root, read_outputs, s3_filesystem
from bench.scale.options import parse_args
from bench.scale.pipeline import (
    DAG_ID,
    MOTO_KEY,
    MOTO_SECRET,
    REGION,
    BenchBusy,
    Moto,
    RunConfig,
    dags_test,
    fresh_airflow,
    lock_work,
    pipeline_env,
    tail,
)
from bench.scale.process_memory import AIRFLOW, DRIVER, MemorySampler, Peaks, by_task
from bench.scale.report import backfill_totals, full_report
from bench.scale.step_walls import step_walls

SCALE_START = date(2026, 1, 10)  # the scale batches: 2026-01-10, -11, -12, ...
BACKFILL_START = date(2026, 2, 1)  # the daily batches: 2026-02-01, -02, ...
# One small run before the measured ones, left out of the tables: the first featurize of
# a (model, image size) converts the model for LiteRT (~17 s here, cached after), and the
# first run of a session fills the OS's caches; neither belongs to the first size's figures.
WARMUP_DATE = date(2026, 1, 1)
WARMUP_IMAGES = 131


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


class RunFailed(RuntimeError):
    """A DAG run did not succeed: the bench stops there, keeping what it measured."""

    def __init__(self, message: str, record: dict[str, Any]):
        super().__init__(message)
        self.record = record


def plan(args: Any) -> list[dict[str, Any]]:
    """The batches to write and run: (kind, size, date, seed); the warm-up first, then the
    scale sizes, then the daily batches."""
    out = []
    if args.warmup:
        out.append({"kind": "warmup", "size": WARMUP_IMAGES, "date": WARMUP_DATE.isoformat(),
                    "seed": args.seed + 100})  # fmt: skip
    out += [
        {"kind": "scale", "size": n, "date": (SCALE_START + timedelta(i)).isoformat(),
         "seed": args.seed}
        for i, n in enumerate(args.sizes)
    ]  # fmt: skip
    out += [
        {"kind": "backfill", "size": args.backfill_images,
         "date": (BACKFILL_START + timedelta(i)).isoformat(), "seed": args.seed + 1 + i}
        for i in range(args.backfill_days)
    ]  # fmt: skip
    return out


def write_batches(items: list[dict[str, Any]], incoming: Path, workers: int) -> list[BatchInfo]:
    infos = []
    for item in items:
        info = generate_batch(incoming / item["date"], item["size"], seed=item["seed"],
                              workers=workers)  # fmt: skip
        how = "reused" if info.reused else f"written in {info.seconds:.0f} s"
        say(f"batch {item['date']} ({item['kind']}): {info.images:,} images over "
            f"{info.labels} labels + {len(info.bad)} bad files, mean JPEG "
            f"{info.mean_bytes / 1024:.2f} KiB ({how})")  # fmt: skip
        infos.append(info)
    return infos


def stages(
    tasks: dict[str, dict[str, Any]],
    summary: dict[str, Any],
    staging: float | None,
    walls: dict[str, float | None],
    dag_run: float | None,
    wall: float,
) -> dict[str, float | None]:
    """The stage -> seconds of one run (see bench.scale.metadata.STAGE_TASKS); ``walls``:
    the steps' spark-submit wall times (bench.scale.step_walls)."""
    steps = summary.get("step_seconds") or {}

    def task(stage: str) -> float | None:
        return (tasks.get(metadata.STAGE_TASKS[stage]) or {}).get("seconds")

    return {
        "upload": task("upload"),
        "staging": staging,
        "featurize": steps.get("featurize"),
        "featurize_wall": walls.get("featurize"),
        "reduce": steps.get("reduce"),
        "reduce_wall": walls.get("reduce"),
        "publish": task("publish"),
        "teardown": task("teardown"),
        "dag_run": dag_run,
        "wall": wall,
    }


def ratios(stage: dict[str, float | None]) -> dict[str, float | None]:
    dag, feat = stage["dag_run"], stage["featurize"]
    up, staging = stage["upload"], stage["staging"]
    return {
        "end_to_end_vs_featurize": dag / feat if dag and feat else None,
        "upload_staging_share": (up + staging) / dag
        if dag and up is not None and staging is not None
        else None,
    }


def forget_batch(hook: Any, bucket: str, batch: str) -> int:
    """Delete the batch's raw/ and runs/ objects from moto (its memory holds them)."""
    from fruits.storage.layout import raw_prefix, run_prefix

    keys = [
        key
        for prefix in (raw_prefix(batch), run_prefix(batch))
        for key in hook.list_keys(bucket_name=bucket, prefix=prefix)
    ]
    if keys:
        hook.delete_objects(bucket=bucket, keys=keys)
    return len(keys)


def measure_run(
    item: dict[str, Any],
    info: BatchInfo,
    config: RunConfig,
    env: dict[str, str],
    moto: Moto,
    keep_objects: bool,
) -> dict[str, Any]:
    """One ``airflow dags test`` of the batch, and everything measured about it."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from fruits.storage.publish import run_summary

    batch = item["date"]
    record: dict[str, Any] = {**item, "batch": _batch_record(item, info),
                              "loadavg_before": os.getloadavg()}  # fmt: skip
    samplers: list[MemorySampler] = []

    def watch(pid: int) -> Callable[[], Peaks]:
        samplers.append(MemorySampler(pid, moto.pid).start())
        return samplers[-1].stop

    say(f"run {batch}: airflow dags test {DAG_ID} {batch} ({item['size']:,} images; "
        f"log {config.logs / f'{batch}-dags-test.log'})")  # fmt: skip
    done = dags_test(env, batch, config.logs / f"{batch}-dags-test.log", watch)
    record["loadavg_after"] = os.getloadavg()
    record["dags_test"] = {"returncode": done.returncode, "wall_seconds": done.wall_seconds,
                           "log": str(done.log)}  # fmt: skip
    record["memory"] = samplers[0].peaks.as_dict()
    run = metadata.last_run(config.database, DAG_ID, batch)
    record["dag_run"] = run
    rows = metadata.task_rows(config.database, DAG_ID, run["run_id"])
    tasks = metadata.task_durations(rows)
    record["tasks"] = tasks
    for group in record["memory"]["groups"].values():  # which task each peak fell in
        group["during_task"] = metadata.task_at(rows, group.get("peak_at"))
    record["memory"]["by_task"] = {
        group: by_task(samplers[0].peaks.series, lambda when: metadata.task_at(rows, when), group)
        for group in (AIRFLOW, DRIVER)
    }
    if done.returncode or run["state"] != "success":
        raise RunFailed(f"run {batch}: airflow dags test exited {done.returncode}, DAG run "
                        f"{run['state']}; log {done.log}:\n{tail(done.log)}", record)  # fmt: skip
    hook = S3Hook(aws_conn_id="aws_default")
    summary = run_summary(hook, config.bucket, batch, require_marker=True)
    record["summary"] = summary
    add_steps = metadata.STAGE_TASKS["staging"]
    staging, source = metadata.staging_seconds(
        metadata.xcom_value(config.database, DAG_ID, run["run_id"], add_steps),
        done.log.read_text(errors="replace"),
        (tasks.get(add_steps) or {}).get("seconds"),
    )
    record["staging_source"] = source
    cluster_id = metadata.xcom_value(config.database, DAG_ID, run["run_id"], "create_job_flow")
    walls = step_walls(config.scratch, cluster_id)
    record["stages"] = stages(tasks, summary, staging, walls, run["seconds"], done.wall_seconds)
    record["ratios"] = ratios(record["stages"])
    good, bad = expected_outputs(config.incoming / batch, info.bad)
    fs = s3_filesystem(moto.endpoint, MOTO_KEY, MOTO_SECRET, REGION)
    result = check(good, bad, read_outputs(fs, published_root(config.bucket, batch)))
    record["completeness"] = {**result.as_dict(), "summary": result.summary()}
    say(f"run {batch}: DAG run {run['seconds']:.1f} s, featurize "
        f"{record['stages']['featurize']} s; outputs {result.summary()}")  # fmt: skip
    if not keep_objects:
        forget_batch(hook, config.bucket, batch)
    return record


def _batch_record(item: dict[str, Any], info: BatchInfo) -> dict[str, Any]:
    return {"date": item["date"], "kind": item["kind"], "images": info.images,
            "labels": info.labels, "bad": info.bad, "mean_bytes": info.mean_bytes,
            "image_bytes": info.image_bytes, "seconds": info.seconds,
            "reused": info.reused}  # fmt: skip


def machine() -> dict[str, Any]:
    versions = {}
    for name in ("apache-airflow", "pyspark", "moto", "ai-edge-litert", "pyarrow"):
        try:
            versions[name] = dist.version(name)
        except dist.PackageNotFoundError:
            versions[name] = None
    return {"cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "versions": versions}  # fmt: skip


def use_env(env: dict[str, str]) -> None:
    """This process reads S3 and Airflow's connection as the runs do: same environment
    (set before Airflow is first imported, which reads AIRFLOW_HOME once), but quiet: the
    hooks' info lines (a delete names every key) would bury the tables."""
    os.environ.clear()
    os.environ.update(env)
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"


def run_all(args: Any, items: list[dict[str, Any]], infos: list[BatchInfo],
            config: RunConfig, results: dict[str, Any],
            saved: Callable[[], None] = lambda: None) -> None:  # fmt: skip
    moto = Moto(config.logs / "moto.log").start()
    say(f"S3: moto's server on {moto.endpoint} (pid {moto.pid})")
    try:
        env = pipeline_env(os.environ, config, moto.endpoint)
        use_env(env)
        say(f"Airflow home {config.airflow_home}: airflow db migrate")
        fresh_airflow(config, env)
        for item, info in zip(items, infos, strict=True):
            record = measure_run(item, info, config, env, moto, args.keep_objects)
            results["warmup" if item["kind"] == "warmup" else "runs"].append(record)
            saved()  # an hour-long bench stopped midway keeps the runs it made
    finally:
        moto.stop()


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that the run and moto are stopped on the way out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        lock = lock_work(args.work_dir)
    except BenchBusy as exc:
        print(exc, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return bench(args)
    finally:
        lock.close()


def bench(args: Any) -> int:
    config = RunConfig(work=args.work_dir, bucket=args.bucket, image_size=args.image_size,
                       model=args.model, weights=args.weights)  # fmt: skip
    started = time.time()
    items = plan(args)
    infos = write_batches(items, config.incoming, args.workers)
    results: dict[str, Any] = {
        "machine": machine(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "batches": [_batch_record(item, info) for item, info in zip(items, infos, strict=True)],
        "warmup": [],
        "runs": [],
    }
    failure = None

    def saved() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**results, "partial": True}, indent=1, default=str,
                                        ensure_ascii=False))  # fmt: skip

    if not args.no_runs:
        try:
            run_all(args, items, infos, config, results, saved)
        except RunFailed as exc:
            failure = str(exc)
            results["failed_run"] = exc.record
        except Exception as exc:  # noqa: BLE001 -- printed, and the JSON still written
            traceback.print_exc()
            failure = f"{type(exc).__name__}: {exc}"
    backfill = [run for run in results["runs"] if run["kind"] == "backfill"]
    results["backfill"] = backfill_totals(backfill) if backfill else None
    checked = results["warmup"] + results["runs"]
    incomplete = [run["date"] for run in checked if not run["completeness"]["ok"]]
    results["ok"] = failure is None and not incomplete
    results["failure"] = failure
    results["wall_s"] = round(time.time() - started, 1)
    results["tables"] = full_report(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str, ensure_ascii=False))
    print(results["tables"])
    print(f"\nwrote {args.json} ({results['wall_s']:.0f} s)")
    if failure:
        print(f"\nFAILED: {failure}", file=sys.stderr)
    for batch in incomplete:
        print(f"\nINCOMPLETE OUTPUTS for batch {batch}: see the completeness table",
              file=sys.stderr)  # fmt: skip
    return 0 if results["ok"] else 1
