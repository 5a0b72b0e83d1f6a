"""The README's EMR, EC2 and Serverless estimate is arithmetic on a measured rate: check the
arithmetic."""

from __future__ import annotations

import pytest

from bench.emr_estimate import ASSUMPTIONS, estimate, rates_from, table

# the prices and minutes the numbers below are worked out by hand from
PINNED = {
    "ec2_usd_per_node_hour": 0.192,
    "emr_fee_per_node_hour": 0.048,
    "spot_discount": 0.60,
    "vcpus_per_node": 4,
    "emr_fixed_minutes": 12.0,
    "ec2_fixed_minutes": 12.0,
    "reduce_minutes": 1.0,
    "arm64_ec2_usd_per_node_hour": 0.1632,
    "arm64_emr_fee_per_node_hour": 0.0408,
    "arm64_rate_vs_x86_64": 1.0,
    "serverless_usd_per_vcpu_hour": 0.052624,
    "serverless_usd_per_gb_hour": 0.0057785,
    "arm64_serverless_usd_per_vcpu_hour": 0.042094,
    "arm64_serverless_usd_per_gb_hour": 0.0046228,
    "serverless_worker_vcpus": 4,
    "serverless_worker_gb": 16,
    "serverless_fixed_minutes": 4.0,
    "serverless_billed_fixed_minutes": 2.0,
}


@pytest.fixture
def pinned(monkeypatch):
    assert set(PINNED) <= set(ASSUMPTIONS)  # no key the code does not read
    for key, value in PINNED.items():
        monkeypatch.setitem(ASSUMPTIONS, key, value)


def test_featurize_time_divides_by_the_cores_and_the_bill_covers_every_node(pinned):
    two, four = estimate(25.0, 90_000, 2), estimate(25.0, 90_000, 4)
    assert two.featurize_min == pytest.approx(90_000 / (25.0 * 4 * 2) / 60)  # 7.5 min
    assert four.featurize_min == pytest.approx(two.featurize_min / 2)
    fixed = ASSUMPTIONS["emr_fixed_minutes"] + ASSUMPTIONS["reduce_minutes"]
    assert two.emr_total_min == pytest.approx(fixed + 7.5)
    # master + 2 core nodes at EC2's price plus EMR's fee, billed for the whole cluster life
    assert two.emr_usd == pytest.approx(3 * (0.192 + 0.048) * (fixed + 7.5) / 60)


def test_ec2_costs_the_same_nodes_and_minutes_without_the_emr_fee(pinned):
    two, four = estimate(25.0, 90_000, 2), estimate(25.0, 90_000, 4)
    # 2 workers: 12 + 7.5 + 1 = 20.5 min; 4 workers: 12 + 3.75 + 1 = 16.75 min
    assert two.ec2_total_min == pytest.approx(20.5)
    assert four.ec2_total_min == pytest.approx(16.75)
    assert two.emr_usd == pytest.approx(0.246)  # 3 x 0.24 x 20.5 / 60
    assert two.ec2_usd == pytest.approx(0.1968)  # 3 x 0.192 x 20.5 / 60
    assert four.emr_usd == pytest.approx(0.335)  # 5 x 0.24 x 16.75 / 60
    assert four.ec2_usd == pytest.approx(0.268)  # 5 x 0.192 x 16.75 / 60
    # the EMR fee is 0.048 / 0.24 = 20% of EMR's node-hour: EC2 is exactly 80% of it
    assert two.ec2_usd == pytest.approx(0.8 * two.emr_usd)
    assert four.ec2_usd == pytest.approx(0.8 * four.emr_usd)


def test_spot_discounts_the_workers_only(pinned):
    two, four = estimate(25.0, 90_000, 2), estimate(25.0, 90_000, 4)
    # on-demand primary 0.192 + each worker at 0.192 x (1 - 0.6) = 0.0768 per hour
    assert two.ec2_spot_usd == pytest.approx(0.11808)  # (0.192 + 2 x 0.0768) x 20.5 / 60
    assert four.ec2_spot_usd == pytest.approx(0.13936)  # (0.192 + 4 x 0.0768) x 16.75 / 60
    assert two.ec2_spot_usd < two.ec2_usd < two.emr_usd
    # not all nodes: a discount on the primary too would give 3 x 0.0768 x 20.5 / 60
    assert two.ec2_spot_usd != pytest.approx(0.07872)


def test_ec2_has_fixed_minutes_of_its_own(pinned, monkeypatch):
    monkeypatch.setitem(ASSUMPTIONS, "ec2_fixed_minutes", 20.0)
    two = estimate(25.0, 90_000, 2)
    assert two.emr_total_min == pytest.approx(20.5)  # EMR's unchanged: 12 + 7.5 + 1
    assert two.emr_usd == pytest.approx(0.246)
    assert two.ec2_total_min == pytest.approx(28.5)  # 20 + 7.5 + 1
    assert two.ec2_usd == pytest.approx(0.2736)  # 3 x 0.192 x 28.5 / 60
    assert two.ec2_spot_usd == pytest.approx(0.16416)  # (0.192 + 2 x 0.0768) x 28.5 / 60


def test_the_table_shows_both_backends_and_every_assumption(pinned):
    results = {
        "machine": {"cores": 2},
        "scaling": {"model": "mobilenetv2", "size": 224, "fit": {"marginal_rate": 50.0}},
    }
    text = table(results, 90_000, [2])
    assert text.startswith("EMR, EC2 and EMR Serverless paper estimate, 90,000 images")
    assert (
        "mobilenetv2@224: x86_64 25.0 img/s per vCPU measured here; arm64 25.0 assumed "
        "(x1.00, not measured)"
    ) in text
    assert "x86_64: $0.1920/node-h EC2, +$0.0480/node-h EMR fee; Serverless " in text
    assert "arm64: $0.1632/node-h EC2, +$0.0408/node-h EMR fee; Serverless " in text
    assert "Serverless $0.052624/vCPU-h + $0.0057785/GB-h" in text
    x86, arm = [row for row in text.splitlines() if "2 core nodes" in row]
    assert x86.lstrip().startswith("x86_64") and arm.lstrip().startswith("arm64")
    assert "featurize   7.5 min" in x86 and "featurize   7.5 min" in arm
    assert "EMR: cluster  20.5 min, $0.25" in x86  # 0.246
    assert "EC2: cluster  20.5 min, $0.20 on-demand, $0.12 with spot workers" in x86
    # arm64: 3 x (0.1632 + 0.0408) x 20.5 / 60 = 0.209; 3 x 0.1632 x 20.5 / 60 = 0.167;
    # (0.1632 + 2 x 0.06528) x 20.5 / 60 = 0.100
    assert "EMR: cluster  20.5 min, $0.21" in arm
    assert "EC2: cluster  20.5 min, $0.17 on-demand, $0.10 with spot workers" in arm
    # serverless: (4 + 7.5 + 1) min; 3 workers x (4 x 0.052624 + 16 x 0.0057785) x 10.5 / 60
    assert "Serverless (2 executors + driver): run  12.5 min, $0.16" in x86
    for key in ASSUMPTIONS:
        assert f"assumption: {key} = " in text
    assert "assumption: spot_discount = 0.6" in text


def test_serverless_bills_the_workers_while_the_jobs_run_from_the_same_rate(pinned):
    two, four = estimate(25.0, 90_000, 2), estimate(25.0, 90_000, 4)
    # a worker-hour: 4 vCPU x 0.052624 + 16 GB x 0.0057785 = 0.302952
    # 2 executors + driver, billed 2 + 7.5 + 1 = 10.5 min; the run 4 + 7.5 + 1 = 12.5 min
    assert two.serverless_total_min == pytest.approx(12.5)
    assert two.serverless_usd == pytest.approx(3 * 0.302952 * 10.5 / 60)  # 0.159
    assert four.serverless_total_min == pytest.approx(8.75)  # 4 + 3.75 + 1
    assert four.serverless_usd == pytest.approx(5 * 0.302952 * 6.75 / 60)  # 0.170
    assert two.featurize_min == four.featurize_min * 2  # the same measured rate as EMR's
    arm = estimate(25.0, 90_000, 2, "arm64")
    assert arm.serverless_usd == pytest.approx(3 * (4 * 0.042094 + 16 * 0.0046228) * 10.5 / 60)


def test_arm64_uses_the_same_measured_rate_times_its_assumed_factor_and_its_prices(
    pinned, monkeypatch
):
    x86, arm = estimate(25.0, 90_000, 2), estimate(25.0, 90_000, 2, "arm64")
    assert arm.featurize_min == pytest.approx(x86.featurize_min)  # factor 1.0
    assert arm.emr_usd == pytest.approx(3 * 0.204 * 20.5 / 60)
    assert arm.ec2_usd == pytest.approx(3 * 0.1632 * 20.5 / 60)
    assert arm.ec2_spot_usd == pytest.approx((0.1632 + 2 * 0.1632 * 0.4) * 20.5 / 60)
    monkeypatch.setitem(ASSUMPTIONS, "arm64_rate_vs_x86_64", 1.25)
    faster = estimate(25.0, 90_000, 2, "arm64")
    assert faster.featurize_min == pytest.approx(7.5 / 1.25)  # 6 min
    assert estimate(25.0, 90_000, 2).featurize_min == pytest.approx(7.5)  # x86 unchanged


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
