"""The scale bench's verdicts: what grows linearly, what memory stays flat."""

from __future__ import annotations

import pytest

from bench.scale.verdicts import fit_line, flatness, linearity


def test_seconds_per_image_within_20_percent_of_the_smallest_size_is_linear():
    v = linearity({10_000: 100.0, 30_000: 330.0, 90_000: 1050.0})  # +10%, +17%
    assert v.verdict == "linear"
    assert "30,000: +10%" in v.detail and "90,000: +17%" in v.detail


def test_a_stage_that_costs_more_per_image_as_the_batch_grows_is_superlinear():
    assert linearity({10_000: 100.0, 30_000: 310.0, 90_000: 1200.0}).verdict == "superlinear"
    # quadratic growth
    assert linearity({1: 1.0, 3: 9.0}).verdict == "superlinear"


def test_a_fixed_cost_makes_a_stage_sublinear():
    assert linearity({10_000: 10.0, 30_000: 11.0, 90_000: 12.0}).verdict == "sublinear"


def test_superlinear_wins_over_sublinear_when_both_show():
    assert linearity({100: 10.0, 200: 10.0, 400: 80.0}).verdict == "superlinear"


def test_the_sizes_order_does_not_matter_and_missing_figures_are_left_out():
    v = linearity({90_000: 900.0, 10_000: 100.0, 30_000: None})
    assert v.verdict == "linear" and "vs 10,000's" in v.detail


@pytest.mark.parametrize("points", [{}, {10: 1.0}, {10: 1.0, 20: None}, {10: 0.0, 20: 1.0}])
def test_no_verdict_without_two_usable_sizes(points):
    assert linearity(points).verdict == "n/a"
    assert flatness(points).verdict == "n/a"


def test_the_least_squares_line_gives_the_fixed_and_the_marginal_cost():
    fixed, per_image = fit_line({1000: 15.0, 2000: 25.0, 4000: 45.0})
    assert fixed == pytest.approx(5.0) and per_image == pytest.approx(0.01)
    assert fit_line({1000: 15.0}) is None


def test_memory_within_10_percent_of_the_smallest_size_is_flat():
    assert flatness({10_000: 1000.0, 30_000: 2000.0, 90_000: 1090.0}).verdict == "flat"
    assert flatness({10_000: 1000.0, 90_000: 1101.0}).verdict == "grows"
    assert flatness({10_000: 1000.0, 90_000: 890.0}).verdict == "shrinks"
    assert "90,000 vs 10,000: +10%" in flatness({10_000: 1000.0, 90_000: 1100.0}).detail
