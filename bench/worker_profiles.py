"""What the jobs' Python workers wrote under ``FRUITS_INFERENCE_PROFILE`` (featurize,
``fruits_spark.inference.workers``) and ``FRUITS_REDUCE_PROFILE`` (reduce,
``fruits_spark.profiling``), summed up: where a task's time goes, when the workers
started, the steady rate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def reduce_profile(folder: Path, run_start: float, run_end: float) -> dict:
    """Per pass of the reduce job's first run (``summary``, ``project``): when the Python
    workers started, when the pass's function was called in them, when its first Arrow
    batch arrived, when the last task ended, and the seconds spent computing."""
    passes: dict[str, list[dict]] = {}
    for f in sorted(folder.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if run_start <= r["called"] <= run_end:
                passes.setdefault(r["event"], []).append(r)

    def at(rows: list[dict], key: str, pick) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return pick(values) - run_start if values else None

    return {
        name: {
            "tasks": len(rows),
            "rows": sum(r["rows"] for r in rows),
            "workers": len({r.get("process_start") for r in rows}),
            "process_start_s": at(rows, "process_start", max),
            "called_s": at(rows, "called", min),
            "first_batch_s": at(rows, "first_batch", min),
            "end_s": at(rows, "end", max),
            "compute_s": sum(r["compute_s"] for r in rows),
        }
        for name, rows in passes.items()
    }


def featurize_profile(folder: Path, run_start: float, run_end: float) -> dict:
    """Where the workers' time went, from the per-batch lines inference.py wrote."""
    records, builds, tasks = [], [], []
    for f in sorted(folder.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            record = {**json.loads(line), "pid": f.stem}
            event = record.get("event")
            if event == "model":
                builds.append(record)
            elif event == "task":
                tasks.append(record)
            else:
                records.append(record)
    if not records:
        return {}
    rows = sum(r["rows"] for r in records)
    first, last = min(r["start"] for r in records), max(r["end"] for r in records)
    stages = ("stall_s", "read_s", "decode_s", "preprocess_s", "predict_s", "yield_s")
    totals = {s: sum(r.get(s, 0.0) for r in records) for s in stages}
    per_worker = {}
    for pid in sorted({r["pid"] for r in records}):
        mine = [r for r in records if r["pid"] == pid]
        per_worker[pid] = {
            "batches": len(mine),
            "rows": sum(r["rows"] for r in mine),
            "first_start_s": min(r["start"] for r in mine) - run_start,
            "last_end_s": max(r["end"] for r in mine) - run_start,
            "first_batch_s": min(mine, key=lambda r: r["start"])["end"]
            - min(r["start"] for r in mine),
        }
    # Between tasks: from one task's generator ending to the next one's start in the same
    # worker (Spark's per-task work: JVM, result caching, Parquet commit, worker set-up).
    gaps = []
    for pid in per_worker:
        mine = sorted((t for t in tasks if t["pid"] == pid), key=lambda t: t["start"])
        gaps += [b["start"] - a["end"] for a, b in zip(mine, mine[1:], strict=False)]
        per_worker[pid]["tasks"] = len(mine)
        per_worker[pid]["cpu_s"] = mine[-1].get("cpu") if mine else None
    for b in builds:
        if b["pid"] in per_worker:
            started = b.get("process_start")
            per_worker[b["pid"]].update(
                process_start_s=None if started is None else started - run_start,
                module_import_s=b["module_import"] - run_start,
                model_start_s=b["start"] - run_start,
                model_build_s=b["end"] - b["start"],
            )
    return {
        "workers": len(per_worker),
        "batches": len(records),
        "rows": rows,
        "mean_rows_per_batch": rows / len(records),
        "before_first_batch_s": first - run_start,
        "first_batch_end_s": min(r["end"] for r in records) - run_start,
        "busy_s": last - first,
        "after_last_batch_s": run_end - last,
        "steady_rate": rows / (last - first) if last > first else None,
        "tasks": len(tasks),
        "workers_cpu_s": sum(w.get("cpu_s") or 0 for w in per_worker.values()),
        "between_tasks_s": sum(gaps),
        "between_tasks_median_s": float(np.median(gaps)) if gaps else None,
        "stage_s": totals,  # summed over workers (CPU-ish seconds of the tasks)
        "stage_ms_per_image": {s: 1000 * v / rows for s, v in totals.items()},
        "per_worker": per_worker,
    }
