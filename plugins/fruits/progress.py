"""A run's live progress, as ``wait_for_step`` shows it on every poke, on every backend.

The jobs write ``<progress folder>/featurize.json`` and ``reduce.json`` (the folder is
:func:`fruits.storage.layout.progress_uri`, in the run's staging prefix; the writer is
``fruits_spark.progress``, which documents the fields) every ``FRUITS_PROGRESS_SECONDS``.
EMR and ec2 write them to S3 themselves; the local backend's jobs write the cluster's
scratch mirror of the bucket, and its sensor copies them up (:func:`mirror_local`)
before reading, so every sensor reads the same objects from S3 and logs::

    featurize: 41,200 / 90,000 images (46%), 212 img/s, about 4 min left
    reduce: pass 2/2: projection, 12 s

A step whose progress has not moved for ``FRUITS_STALL_MINUTES`` (its count and phase
the same, or no write at all) fails the run with :func:`stall_message`, instead of
waiting for the whole timeout. Published with the outputs, the objects also give the
run summary each step's wall time and featurize's rate (:func:`step_times`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fruits.storage.s3sync import split_uri

STEPS = ("featurize", "reduce")


def read_progress(hook: Any, folder_uri: str) -> dict[str, dict]:
    """Step -> its progress record, for the steps that wrote one (a half-written or
    unreadable object counts as none: the next poke reads it again)."""
    bucket, prefix = split_uri(folder_uri)
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    found = {}
    for step in STEPS:
        key = f"{prefix}{step}.json"
        try:
            if not hook.check_for_key(key, bucket_name=bucket):
                continue
            record = json.loads(hook.read_key(key, bucket_name=bucket))
        except ValueError:
            continue
        if isinstance(record, dict):
            found[step] = record
    return found


def mirror_local(hook: Any, folder: Path, folder_uri: str) -> int:
    """Copy the local jobs' progress files (``<step>.json``) to ``folder_uri``; returns
    how many (Hadoop's hidden ``.crc`` files stay behind)."""
    bucket, prefix = split_uri(folder_uri)
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    sent = 0
    for step in STEPS:
        path = folder / f"{step}.json"
        try:
            data = path.read_bytes()
            json.loads(data)  # not a half-written file
        except (OSError, ValueError):
            continue
        hook.load_bytes(data, key=f"{prefix}{step}.json", bucket_name=bucket, replace=True)
        sent += 1
    return sent


def duration(seconds: float) -> str:
    """``45 s``, ``4 min``, ``2 h 05 min``."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def progress_line(record: Mapping[str, Any]) -> str:
    """One step's progress as the task log shows it."""
    step = record.get("step", "?")
    done, total = int(record.get("done") or 0), record.get("total")
    if step == "featurize" and total:
        pct = 100 if done >= int(total) else min(99, round(100 * done / int(total)))
        head = f"{step}: {done:,} / {int(total):,} images ({pct}%)"
        if record.get("finished"):
            rate = record.get("average_rate")
            took = duration(record.get("elapsed_seconds") or 0)
            return f"{head}, done in {took}" + (f" ({rate:,.0f} img/s)" if rate else "")
        rate, eta = record.get("rate"), record.get("eta_seconds")
        if rate is None:
            return f"{head}, starting"
        left = "rate unknown" if eta is None else f"about {duration(eta)} left"
        return f"{head}, {rate:,.0f} img/s, {left}"
    elapsed = duration(record.get("elapsed_seconds") or 0)
    if record.get("finished"):
        return f"{step}: done in {elapsed}" + (f" ({done:,} rows)" if done else "")
    return f"{step}: {record.get('phase', 'running')}, {elapsed}"


def stall_message(record: Mapping[str, Any], now: float, stall_seconds: float) -> str | None:
    """Why a running step counts as stuck, or None: its count and phase have not moved
    for ``stall_seconds`` (``changed_at``), or it has not written at all for as long
    (``updated_at``: the driver itself is gone or hung). ``stall_seconds <= 0``: never."""
    if stall_seconds <= 0 or record.get("finished"):
        return None
    step = record.get("step", "?")
    limit = duration(stall_seconds)
    updated = float(record.get("updated_at") or 0)
    changed = record.get("changed_at")
    changed = updated if changed is None else float(changed)
    if now - updated > stall_seconds:
        return (
            f"{step} stalled: no progress report for {duration(now - updated)} "
            f"(limit {limit}, FRUITS_STALL_MINUTES); last: {progress_line(record)}"
        )
    if now - changed > stall_seconds:
        return (
            f"{step} stalled: no progress for {duration(now - changed)} "
            f"(limit {limit}, FRUITS_STALL_MINUTES): {progress_line(record)}"
        )
    return None


def report(
    log: Any, hook: Any, folder_uri: str, stall_seconds: float, now: float | None = None
) -> str | None:
    """Log each step's progress line; return the stall message of a stuck step, if any
    (the caller fails the task with it). Never raises for a progress object it cannot
    read: progress is advisory, the step states decide."""
    now = time.time() if now is None else now
    try:
        records = read_progress(hook, folder_uri)
    except Exception as exc:  # noqa: BLE001 -- S3 hiccup: say so, the next poke retries
        log.warning("progress: cannot read %s: %s", folder_uri, exc)
        return None
    if not records:
        log.info("progress: no report yet at %s", folder_uri)
    stalled = None
    for step in STEPS:
        if step in records:
            log.info("%s", progress_line(records[step]))
            stalled = stalled or stall_message(records[step], now, stall_seconds)
    return stalled


def step_times(records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """For the run summary: each finished step's wall time (the job's, from its driver's
    start) and featurize's images per second."""
    out: dict[str, Any] = {}
    seconds = {
        step: round(float(r["elapsed_seconds"]), 1)
        for step, r in records.items()
        if r.get("finished") and r.get("elapsed_seconds") is not None
    }
    if seconds:
        out["step_seconds"] = seconds
    featurize = records.get("featurize") or {}
    if featurize.get("finished") and featurize.get("average_rate") is not None:
        out["featurize_rate"] = float(featurize["average_rate"])
    return out
