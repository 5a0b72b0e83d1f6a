"""The README's EMR estimate is arithmetic on a measured rate: check the arithmetic."""

from __future__ import annotations

import pytest

from bench.emr_estimate import ASSUMPTIONS, estimate, rates_from


def test_featurize_time_divides_by_the_cores_and_the_bill_covers_every_node():
    two, four = estimate(25.0, 90_000, 2), estimate(25.0, 90_000, 4)
    assert two.featurize_min == pytest.approx(90_000 / (25.0 * 4 * 2) / 60)  # 7.5 min
    assert four.featurize_min == pytest.approx(two.featurize_min / 2)
    fixed = ASSUMPTIONS["fixed_minutes"] + ASSUMPTIONS["reduce_minutes"]
    assert two.total_min == pytest.approx(fixed + 7.5)
    # master + 2 core nodes, billed for the whole cluster life
    assert two.usd == pytest.approx(3 * ASSUMPTIONS["usd_per_node_hour"] * (fixed + 7.5) / 60)


def test_rates_prefer_the_marginal_rate_and_are_per_core():
    results = {
        "machine": {"cores": 2},
        "featurize": [
            {"model": "vgg16", "size": 224, "variant": "shipped", "job_rate_steady": 8.0},
            {"model": "mobilenetv2", "size": 224, "variant": "shipped", "job_rate_steady": 40.0},
            {"model": "mobilenetv2", "size": 224, "variant": "other", "job_rate_steady": 99.0},
        ],
        "scaling": {"model": "mobilenetv2", "size": 224, "fit": {"marginal_rate": 50.0}},
    }
    assert rates_from(results) == {"vgg16@224": 4.0, "mobilenetv2@224": 25.0}
