"""What ``make aws-smoke`` says a run will cost, from the settings and its price table,
whose assumptions are bench/emr_estimate.py's."""

from __future__ import annotations

import pytest

from fruits.dev import aws_smoke_cost
from fruits.settings import load_settings

EMR_ENV = {"FRUITS_COMPUTE": "emr", "FRUITS_BUCKET": "my-fruits",
           "FRUITS_EMR_SUBNET": "subnet-0abc"}  # fmt: skip
EC2_ENV = {"FRUITS_COMPUTE": "ec2", "FRUITS_BUCKET": "my-fruits",
           "FRUITS_EC2_SUBNET": "subnet-0abc", "FRUITS_EC2_SECURITY_GROUP": "sg-0abc"}  # fmt: skip


def test_the_cost_lines_come_from_the_settings():
    lines = aws_smoke_cost.cost_lines(load_settings(EMR_ENV), 24)
    text = "\n".join(lines)
    assert "primary  1 x m5.xlarge   on-demand $0.240/h each" in text
    assert "core     2 x m5.xlarge   on-demand $0.240/h each" in text
    assert "total    3 instances, $0.72/h; expected ~15 min: ~$0.18" in text
    assert "after ~75 min: ~$0.90" in text  # the idle hour after the steps
    assert "assumptions: prices are us-east-1 on-demand" in text

    spot = load_settings({**EMR_ENV, "FRUITS_EMR_TASK_SPOT_COUNT": "2"})
    assert "task     2 x m5.xlarge   spot      $0.125/h each" in "\n".join(
        aws_smoke_cost.cost_lines(spot, 24)
    )


def test_ec2_costs_spot_workers_and_names_an_unpriced_type():
    settings = load_settings({**EC2_ENV, "FRUITS_EC2_WORKER_SPOT": "true",
                              "FRUITS_EC2_PRIMARY_TYPE": "x9.huge"})  # fmt: skip
    text = "\n".join(aws_smoke_cost.cost_lines(settings, 24))
    assert "primary  1 x x9.huge     on-demand no price in the table" in text
    assert "worker   2 x m5.xlarge   spot      $0.077/h each" in text
    assert "at least $0.15/h" in text and "look up the price of x9.huge yourself" in text
    # the nodes' shutdown timer: ready timeout + steps' timeout + 30 min
    assert f"after ~{20 + 31 + 30} min" in text


def test_the_price_assumptions_are_the_benchs():
    from bench.emr_estimate import ASSUMPTIONS

    m5 = aws_smoke_cost.EC2_USD_PER_HOUR["m5.xlarge"]
    assert m5 == ASSUMPTIONS["ec2_usd_per_node_hour"]
    assert m5 * aws_smoke_cost.EMR_FEE_SHARE == pytest.approx(ASSUMPTIONS["emr_fee_per_node_hour"])
    assert (
        ASSUMPTIONS["spot_discount"],
        ASSUMPTIONS["emr_fixed_minutes"],
    ) == (aws_smoke_cost.SPOT_DISCOUNT, aws_smoke_cost.FIXED_MINUTES)
