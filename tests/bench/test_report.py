"""The bench report's arithmetic on a missed whole-process target."""

from __future__ import annotations

import pytest

from bench.report import fixed_cost_budget, targets


def row(steady: float | None, total_s: float = 32.7) -> dict:
    whole = 3000 / total_s
    return {
        "model": "mobilenetv2",
        "size": 224,
        "variant": "shipped",
        "job_rate_steady": steady,
        "job_rate_whole_process": whole,
        "ratio_whole_vs_keras": whole / 57.6,
        "ratio_whole_vs_litert": whole / 126.5,
        "ratio_steady_vs_litert": (steady or 0) / 137.2,
        "first_batch_out_s": 10.9,
        "raw": {"rate": 72.5, "rate_whole_process": 57.6},
        "litert": {"rate": 137.2, "rate_whole_process": 126.5},
        "job": {"total_s": total_s, "jvm_start_s": 1.2, "session_start_s": 3.2,
                "result": {"featurized": 3000}},
    }  # fmt: skip


def test_the_budget_is_the_targets_time_less_the_cnn_work_at_the_steady_rate():
    b = fixed_cost_budget(row(155.5), 2.5)
    assert b["allowed_total_s"] == pytest.approx(3000 / (2.5 * 57.6))  # 20.8 s
    assert b["busy_s"] == pytest.approx(3000 / 155.5)  # 19.3 s
    assert b["allowed_fixed_s"] == pytest.approx(3000 / 144.0 - 3000 / 155.5)  # 1.5 s
    assert b["job_fixed_s"] == pytest.approx(32.7 - 3000 / 155.5)  # 13.4 s
    # a slower steady rate than the target's leaves less than nothing for the start-up
    assert fixed_cost_budget(row(120.0), 2.5)["allowed_fixed_s"] < 0
    assert fixed_cost_budget(row(None), 2.5) is None  # no profile, no budget


def test_the_report_explains_a_missed_whole_process_target_and_only_then():
    lines: list[str] = []
    targets([row(155.5)], lines.append)
    missed = [line for line in lines if "where it is missed" in line]
    assert len(missed) == 1
    assert "2.5x raw Keras is 20.8 s for the batch" in missed[0]
    assert "CNN work alone is 19.3 s, which leaves 1.5 s" in missed[0]
    assert "(the job's: 13.4 s)" in missed[0]
    lines.clear()
    targets([row(155.5, total_s=20.0)], lines.append)  # 150 img/s = 2.6x: met
    assert not any("where it is missed" in line for line in lines)
