"""The scale bench's Markdown tables, from run records as bench.scale.run stores them."""

from __future__ import annotations

import pytest

from bench.scale.report import (
    backfill_table,
    backfill_totals,
    full_report,
    memory_table,
    stage_table,
    task_memory_table,
    task_table,
)


def run(
    size: int,
    dag: float,
    featurize: float,
    kind: str = "scale",
    date: str = "2026-01-10",
    py_workers: float | None = 400.0,
) -> dict:
    groups = {
        "airflow task": {"peak_mib": 500.0, "max_processes": 1, "counted": True},
        "moto": {"peak_mib": 300.0 * size / 1000, "max_processes": 1, "counted": False},
    }
    if py_workers is not None:
        groups["python workers"] = {"peak_mib": py_workers, "max_processes": 2, "counted": True}
    return {
        "kind": kind, "size": size, "date": date,
        "stages": {"upload": size / 100, "staging": size / 200, "featurize": featurize,
                   "reduce": 5.0, "publish": 1.0, "teardown": 1.0, "dag_run": dag,
                   "wall": dag + 10},
        "ratios": {"end_to_end_vs_featurize": dag / featurize,
                   "upload_staging_share": (size / 100 + size / 200) / dag},
        "memory": {"groups": groups, "counted_total_peak_mib": 900.0, "samples": 10},
        "completeness": {"ok": True, "summary": "complete",
                         "counts": {"images": size, "features": size, "bad_files": 4,
                                    "rejected": 4, "pca": size}},
    }  # fmt: skip


def test_the_stage_table_has_a_row_per_stage_a_column_per_size_and_a_verdict():
    table = stage_table([run(1000, 100.0, 20.0), run(3000, 200.0, 60.0)])
    lines = table.splitlines()
    assert lines[0] == "| stage | 1,000 images | 3,000 images | linear? |"
    upload = next(line for line in lines if line.startswith("| upload"))
    assert "10.0 s (100 img/s)" in upload and "30.0 s (100 img/s)" in upload
    assert "| linear (" in upload
    reduce = next(line for line in lines if line.startswith("| reduce"))
    assert "5.0 s (200 img/s)" in reduce and "sublinear" in reduce
    assert len(lines) == 2 + 10  # header, rule, 10 stages


def test_a_missing_figure_reads_n_a_and_gets_no_verdict():
    a, b = run(1000, 100.0, 20.0), run(3000, 200.0, 60.0)
    b["stages"]["staging"] = None
    staging = next(line for line in stage_table([a, b]).splitlines() if "staging" in line)
    assert "| n/a |" in staging and "| n/a (" in staging


def test_the_memory_table_marks_moto_not_counted_and_skips_absent_groups():
    table = memory_table([run(1000, 100.0, 20.0), run(3000, 200.0, 60.0, py_workers=500.0)])
    assert "| moto (not counted) | 300 MiB (1) | 900 MiB (1) | grows" in table
    assert "| python workers | 400 MiB (2) | 500 MiB (2) | grows (3,000 vs 1,000: +25%) |" in table
    assert "| airflow task | 500 MiB (1) | 500 MiB (1) | flat" in table


def test_a_peak_names_the_task_that_was_running():
    a, b = run(1000, 100.0, 20.0), run(3000, 200.0, 60.0)
    b["memory"]["groups"]["airflow task"]["during_task"] = "upload_batch"
    table = memory_table([a, b])
    assert "| airflow task | 500 MiB (1) | 500 MiB (1) in upload_batch | flat" in table
    assert "spark driver" not in table
    assert "| all counted, at once | 900 MiB | 900 MiB | flat" in table


def test_backfill_totals_are_sums_and_30_days_extrapolates_the_mean():
    runs = [run(1000, 100.0, 20.0, "backfill"), run(1000, 140.0, 20.0, "backfill")]
    t = backfill_totals(runs)
    assert (t["dag_run_s"], t["featurize_s"], t["fixed_s"]) == (240.0, 40.0, 200.0)
    assert t["dag_run_s_30"] == pytest.approx(3600.0)
    assert t["fixed_s_30"] == pytest.approx(3000.0)
    table = backfill_table(runs)
    assert "| 2026-01-10 | 1,000 | 100.0 s | 20.0 s | 80.0 s | 5.00 |" in table
    assert "| **2 days** | 2,000 | 240.0 s | 40.0 s | 200.0 s | 6.00 |" in table
    assert "| **30 days** (extrapolated) |  | 3,600.0 s | 600.0 s | 3,000.0 s | 6.00 |" in table


def test_the_full_report_titles_every_table():
    results = {
        "args": {"model": "mobilenet", "weights": "imagenet", "image_size": 224},
        "machine": {"cores": 2},
        "batches": [{"date": "2026-01-10", "kind": "scale", "images": 1000, "bad": {"a": "x"},
                     "labels": 131, "mean_bytes": 4096.0, "image_bytes": 4096000,
                     "seconds": 3.0, "reused": False}],
        "runs": [run(1000, 100.0, 20.0), run(1000, 90.0, 20.0, "backfill", "2026-02-01")],
    }  # fmt: skip
    text = full_report(results)
    for title in ("Batches:", "Stages", "Where the time goes:", "Peak RSS", "backfill",
                  "Completeness"):  # fmt: skip
        assert title in text
    assert "| 2026-01-10 | scale | 1,000 | 1 | 131 | 4.00 KiB | 3.9 MiB | written in 3 s |" in text
    assert "| 2026-02-01 | 1,000 | 1,000 | 1,000 | 4 | 4 | 1,000 | OK |" in text


def test_the_task_table_lists_every_task_in_the_order_it_ran():
    a, b = run(1000, 100.0, 20.0), run(3000, 200.0, 60.0, date="2026-01-11")
    a["tasks"] = {"upload_batch": {"seconds": 1.5}, "add_steps": {"seconds": 2.0}}
    b["tasks"] = {"upload_batch": {"seconds": 4.0}, "remove_cluster": {"seconds": None}}
    lines = task_table([a, b]).splitlines()
    assert lines[0] == "| task | 2026-01-10 (1,000) | 2026-01-11 (3,000) |"
    assert lines[2:] == [
        "| `upload_batch` | 1.5 s | 4.0 s |",
        "| `add_steps` | 2.0 s | n/a |",
        "| `remove_cluster` | n/a | n/a |",
    ]


def test_the_task_memory_table_shows_start_peak_and_growth_per_size():
    a, b = run(10_000, 100.0, 80.0), run(90_000, 900.0, 800.0)
    a["memory"]["by_task"] = {
        "airflow task": {
            "upload_batch": {"start_mib": 300.0, "peak_mib": 400.0, "growth_mib": 100.0}
        }
    }
    b["memory"]["by_task"] = {
        "airflow task": {
            "upload_batch": {"start_mib": 300.0, "peak_mib": 650.0, "growth_mib": 350.0},
            "wait_for_step": {"start_mib": 600.0, "peak_mib": 820.0, "growth_mib": 220.0},
        }
    }
    table = task_memory_table([a, b], "airflow task")
    lines = table.splitlines()
    assert "10,000" in lines[0] and "90,000" in lines[0]
    upload = next(line for line in lines if line.startswith("| upload_batch"))
    assert "300 -> 400 (+100)" in upload and "300 -> 650 (+350)" in upload
    wait = next(line for line in lines if line.startswith("| wait_for_step"))
    assert "| - |" in wait and "600 -> 820 (+220)" in wait
    assert "Airflow task by task:" in full_report(
        {"runs": [a, b], "batches": [], "args": {}, "machine": {}}
    )
