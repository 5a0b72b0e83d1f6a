"""The scale bench's tables, in Markdown so that they paste into docs/performance.md.

Every function takes the run records :mod:`bench.scale.run` builds (plain dicts, as
stored in ``bench/scale-results.json``) and returns text; nothing is measured here.
Rates are good images (the batch's size) per second of the stage, whatever the stage
moves, so that stages compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.scale.process_memory import AIRFLOW, DRIVER, GROUPS, NOT_COUNTED
from bench.scale.verdicts import flatness, linearity

# (key in a run's "stages", row title): what the table shows, in the DAG's order
STAGES = (
    ("upload", "upload (`upload_batch`)"),
    ("staging", "staging (in `add_steps`)"),
    ("featurize", "featurize (step's own figure)"),
    ("featurize_wall", "featurize step, spark-submit start to end"),
    ("reduce", "reduce (step's own figure)"),
    ("reduce_wall", "reduce step, spark-submit start to end"),
    ("publish", "publish (`publish_batch`)"),
    ("teardown", "teardown (`remove_cluster`)"),
    ("dag_run", "whole DAG run"),
    ("wall", "`airflow dags test` wall time"),
)
Run = Mapping[str, Any]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} s"


def ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def stage_cell(value: float | None, images: int) -> str:
    if value is None:
        return "n/a"
    rate = f"{images / value:,.0f} img/s" if value > 0 else "-"
    return f"{value:,.1f} s ({rate})"


def _sizes(runs: Sequence[Run]) -> list[str]:
    return [f"{run['size']:,} images" for run in runs]


def stage_table(runs: Sequence[Run]) -> str:
    """A row per stage, a column per size (seconds and images/s), and the verdict."""
    rows = []
    for key, title in STAGES:
        cells = [stage_cell(run["stages"].get(key), run["size"]) for run in runs]
        verdict = linearity({run["size"]: run["stages"].get(key) for run in runs})
        rows.append([title, *cells, f"{verdict.verdict} ({verdict.detail})"])
    return _table(["stage", *_sizes(runs), "linear?"], rows)


def ratio_table(runs: Sequence[Run]) -> str:
    rows = [
        [
            f"{run['size']:,}",
            seconds(run["stages"].get("dag_run")),
            seconds(run["stages"].get("featurize")),
            seconds(run["stages"].get("featurize_wall")),
            ratio(run["ratios"].get("end_to_end_vs_featurize")),
            ratio(run["ratios"].get("upload_staging_share")),
        ]
        for run in runs
    ]
    header = ["images", "DAG run", "featurize alone", "featurize spark-submit",
              "end to end / featurize alone", "(upload + staging) / end to end"]  # fmt: skip
    return _table(header, rows)


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} MiB"


def _peak_cell(peak: dict | None) -> str:
    """``612 MiB (1) in upload_batch``: the peak, the group's processes, and the task that
    was running then (where the run's metadata told it)."""
    if not peak:
        return "-"
    cell = f"{mib(peak['peak_mib'])} ({peak['max_processes']})"
    return f"{cell} in {peak['during_task']}" if peak.get("during_task") else cell


def memory_table(runs: Sequence[Run]) -> str:
    """A row per process group (moto last, marked not counted), a column per size with
    the peak RSS (the most processes of the group alive at once, the task running then),
    and the verdict."""
    rows = []
    for group in GROUPS:
        peaks = {run["size"]: run["memory"]["groups"].get(group) for run in runs}
        if not any(peaks.values()):
            continue
        cells = [_peak_cell(p) for p in peaks.values()]
        verdict = flatness({n: p["peak_mib"] if p else None for n, p in peaks.items()})
        title = f"{group} (not counted)" if group in NOT_COUNTED else group
        rows.append([title, *cells, f"{verdict.verdict} ({verdict.detail})"])
    totals = {run["size"]: run["memory"]["counted_total_peak_mib"] for run in runs}
    verdict = flatness(totals)
    rows.append(["all counted, at once", *(mib(v) for v in totals.values()),
                 f"{verdict.verdict} ({verdict.detail})"])  # fmt: skip
    return _table(["process group: peak RSS (processes)", *_sizes(runs), "flat?"], rows)


def task_memory_table(runs: Sequence[Run], group: str) -> str:
    """A row per task, a column per size: the group's RSS at the task's start -> its peak
    during the task (:func:`bench.scale.process_memory.by_task`). What a task adds, apart
    from what the tasks before it left in the one ``airflow dags test`` process."""
    by_size = {run["size"]: run["memory"].get("by_task", {}).get(group, {}) for run in runs}
    tasks = list(dict.fromkeys(task for rows in by_size.values() for task in rows))
    rows = []
    for task in tasks:
        cells = []
        for per_task in by_size.values():
            row = per_task.get(task)
            cells.append("-" if row is None else
                         f"{row['start_mib']:,.0f} -> {row['peak_mib']:,.0f} "
                         f"(+{row['growth_mib']:,.0f})")  # fmt: skip
        rows.append([task, *cells])
    return _table([f"{group}: MiB at start -> peak (growth)", *_sizes(runs)], rows)


def completeness_table(runs: Sequence[Run]) -> str:
    rows = []
    for run in runs:
        check = run.get("completeness") or {}
        counts = check.get("counts", {})
        result = "OK" if check.get("ok") else "FAILED: " + (check.get("summary") or "not checked")
        rows.append([
            run["date"], f"{run['size']:,}", *(f"{counts.get(k, 0):,}" for k in
            ("images", "features", "bad_files", "rejected", "pca")), result,
        ])  # fmt: skip
    header = ["batch", "size", "good images", "features rows", "bad files", "rejected rows",
              "pca rows", "check"]  # fmt: skip
    return _table(header, rows)


def batch_table(batches: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [b["date"], b["kind"], f"{b['images']:,}", str(len(b["bad"])), str(b["labels"]),
         f"{b['mean_bytes'] / 1024:.2f} KiB", f"{b['image_bytes'] / 2**20:,.1f} MiB",
         "reused" if b["reused"] else f"written in {b['seconds']:.0f} s"]
        for b in batches
    ]  # fmt: skip
    header = ["batch", "for", "images", "bad files", "labels", "mean JPEG", "total", "on disk"]
    return _table(header, rows)


def backfill_totals(runs: Sequence[Run], days: int = 30) -> dict[str, float | None]:
    """Sums over the runs, and the same extrapolated to ``days`` runs (mean x days)."""

    def total(key: str) -> float | None:
        values = [run["stages"].get(key) for run in runs]
        return None if not values or None in values else float(sum(values))

    dag, featurize = total("dag_run"), total("featurize")
    fixed = None if dag is None or featurize is None else dag - featurize
    scale = days / len(runs) if runs else 0.0
    return {
        "runs": len(runs),
        "dag_run_s": dag,
        "featurize_s": featurize,
        "fixed_s": fixed,
        "dag_run_s_30": None if dag is None else dag * scale,
        "featurize_s_30": None if featurize is None else featurize * scale,
        "fixed_s_30": None if fixed is None else fixed * scale,
    }


def backfill_table(runs: Sequence[Run]) -> str:
    """Per daily run: the DAG run, featurize alone, the fixed cost (the difference) and
    the ratio; then the total for the days run and for 30 days."""
    rows = []
    for run in runs:
        dag, feat = run["stages"].get("dag_run"), run["stages"].get("featurize")
        fixed = None if dag is None or feat is None else dag - feat
        per_run = ratio(run["ratios"].get("end_to_end_vs_featurize"))
        rows.append([run["date"], f"{run['size']:,}", seconds(dag), seconds(feat),
                     seconds(fixed), per_run])  # fmt: skip
    t = backfill_totals(runs)
    if runs:
        dag_ratio = (
            t["dag_run_s"] / t["featurize_s"] if t["dag_run_s"] and t["featurize_s"] else None
        )
        rows.append([f"**{t['runs']} days**", f"{sum(r['size'] for r in runs):,}",
                     seconds(t["dag_run_s"]), seconds(t["featurize_s"]), seconds(t["fixed_s"]),
                     ratio(dag_ratio)])  # fmt: skip
        rows.append(["**30 days** (extrapolated)", "",
                     seconds(t["dag_run_s_30"]), seconds(t["featurize_s_30"]),
                     seconds(t["fixed_s_30"]), ratio(dag_ratio)])  # fmt: skip
    header = ["batch", "images", "DAG run", "featurize alone", "fixed cost (run - featurize)",
              "DAG run / featurize"]  # fmt: skip
    return _table(header, rows)


def task_table(runs: Sequence[Run]) -> str:
    """Every task's seconds (Airflow's start to end) per run, in the order they ran: where
    a run's fixed cost goes."""
    order: list[str] = []
    for run in runs:
        order += [task for task in run.get("tasks", {}) if task not in order]
    rows = [
        [
            f"`{task}`",
            *(seconds((run.get("tasks", {}).get(task) or {}).get("seconds")) for run in runs),
        ]
        for task in order
    ]
    header = ["task", *(f"{run['date']} ({run['size']:,})" for run in runs)]
    return _table(header, rows)


def full_report(results: Mapping[str, Any]) -> str:
    """Every table, titled, for the terminal and the JSON."""
    scale = [run for run in results.get("runs", []) if run["kind"] == "scale"]
    backfill = [run for run in results.get("runs", []) if run["kind"] == "backfill"]
    args = results.get("args", {})
    machine = results.get("machine", {})
    setting = (f"model {args.get('model')}, weights {args.get('weights')}, image size "
               f"{args.get('image_size')}, {machine.get('cores')} cores")  # fmt: skip
    parts = [f"### Scale bench ({setting})", "", "Batches:", "", batch_table(results["batches"])]
    if scale:
        parts += ["", "Stages (seconds, good images per second):", "", stage_table(scale),
                  "", "Where the time goes:", "", ratio_table(scale),
                  "", "Peak RSS per process group (summed over the group's processes alive "
                  "at once, sampled every 0.5 s):", "", memory_table(scale)]  # fmt: skip
        for group in (AIRFLOW, DRIVER):
            if any(run["memory"].get("by_task", {}).get(group) for run in scale):
                parts += ["", f"{group.capitalize()} by task:", "",
                          task_memory_table(scale, group)]  # fmt: skip
    if backfill:
        parts += ["", "Small daily batches (backfill), one `airflow dags test` each:", "",
                  backfill_table(backfill)]  # fmt: skip
    checked = scale + backfill
    if checked:
        parts += ["", "Every task (Airflow's start to end; `wait_for_step` holds both steps):",
                  "", task_table(checked)]  # fmt: skip
        parts += ["", "Completeness of the published outputs:", "", completeness_table(checked)]
    return "\n".join(parts)
