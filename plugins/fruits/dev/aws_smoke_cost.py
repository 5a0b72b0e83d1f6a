"""What a ``make aws-smoke`` run will cost: the instances the settings ask for, priced
from a table of assumptions (not quotes), so the user decides before anything is billed.
The figures follow bench/emr_estimate.py's assumptions; a test keeps them equal."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fruits.settings import Settings

# Prices: assumptions, not quotes. On-demand Linux, us-east-1, USD per instance-hour;
# m5.xlarge, the EMR fee and the spot discount as bench/emr_estimate.py assumes them.
EC2_USD_PER_HOUR = {
    "m5.large": 0.096, "m5.xlarge": 0.192, "m5.2xlarge": 0.384, "m5.4xlarge": 0.768,
    "m6i.xlarge": 0.192, "m6i.2xlarge": 0.384, "m7i.xlarge": 0.2016,
    "m6g.xlarge": 0.154, "m7g.xlarge": 0.1632, "c5.xlarge": 0.17, "c5.2xlarge": 0.34,
    "r5.xlarge": 0.252,
}  # fmt: skip
EMR_FEE_SHARE = 0.25  # EMR's fee on top of EC2's price (m5.xlarge: $0.048 on $0.192)
SPOT_DISCOUNT = 0.60  # spot nodes, off on-demand: varies by region, zone and hour
FIXED_MINUTES = 12.0  # cluster start, bootstrap or boot installs, teardown (bench's figure)
TINY_BATCH_MINUTES = 3.0  # two spark-submits of a tiny batch, their start-up included
ASSUMPTIONS = (
    "prices are us-east-1 on-demand Linux (other regions differ); EMR's fee is taken as "
    f"{EMR_FEE_SHARE:.0%} of the EC2 price; spot as {SPOT_DISCOUNT:.0%} off; every node "
    f"is billed per second for the cluster's whole life; {FIXED_MINUTES:.0f} min of "
    f"start-up and teardown plus {TINY_BATCH_MINUTES:.0f} min of steps (bench/emr_estimate.py"
    "'s assumptions, not measured on AWS); EBS, S3 requests, NAT and data transfer not counted"
)


@dataclass(frozen=True)
class Nodes:
    role: str
    instance_type: str
    count: int
    spot: bool = False


def nodes(settings: Settings) -> list[Nodes]:
    """The instances the chosen backend launches, from the settings."""
    if settings.compute == "emr":
        emr = settings.emr
        groups = [
            Nodes("primary", emr.master_type, 1),
            Nodes("core", emr.core_type, emr.core_count),
            Nodes("task", emr.task_type, emr.task_spot_count, spot=True),
        ]
    else:
        ec2 = settings.ec2
        groups = [
            Nodes("primary", ec2.primary_type, 1),
            Nodes("worker", ec2.worker_type, ec2.worker_count, spot=ec2.worker_spot),
        ]
    return [g for g in groups if g.count > 0]


def hourly(node: Nodes, compute: str) -> float | None:
    """USD per hour of one instance of ``node``; None when the table has no price."""
    price = EC2_USD_PER_HOUR.get(node.instance_type)
    if price is None:
        return None
    fee = price * EMR_FEE_SHARE if compute == "emr" else 0.0  # EMR bills its fee on spot too
    return price * (1 - SPOT_DISCOUNT if node.spot else 1) + fee


def worst_minutes(settings: Settings, n_images: int) -> float:
    """How long a cluster lives if the teardown never runs: EMR's idle timeout after the
    steps; an ec2 node's shutdown timer (ready timeout + steps' timeout + 30 min)."""
    if settings.compute == "emr":
        return FIXED_MINUTES + TINY_BATCH_MINUTES + settings.emr.idle_timeout / 60
    timeout = settings.step_timeout(n_images)
    return math.ceil((settings.ec2.ready_timeout + timeout) / 60) + 30


def cost_lines(settings: Settings, n_images: int) -> list[str]:
    """What the run will cost, from the settings and the price table (estimates)."""
    minutes = FIXED_MINUTES + TINY_BATCH_MINUTES
    lines = [f"Cost of this smoke run on {settings.compute} (an estimate, not a quote):"]
    per_hour, unpriced = 0.0, []
    for node in nodes(settings):
        price = hourly(node, settings.compute)
        market = "spot" if node.spot else "on-demand"
        shown = f"${price:.3f}/h each" if price is not None else "no price in the table"
        lines.append(
            f"  {node.role:<8} {node.count} x {node.instance_type:<11} {market:<9} {shown}"
        )
        if price is None:
            unpriced.append(node.instance_type)
        else:
            per_hour += price * node.count
    at_least = "at least " if unpriced else ""
    count = sum(n.count for n in nodes(settings))
    lines.append(f"  total    {count} instances, {at_least}${per_hour:.2f}/h; expected "
                 f"~{minutes:.0f} min: {at_least}~${per_hour * minutes / 60:.2f}")  # fmt: skip
    worst = worst_minutes(settings, n_images)
    lines.append(f"  if the teardown never ran, the cluster would end itself after ~{worst:.0f} "
                 f"min: {at_least}~${per_hour * worst / 60:.2f}")  # fmt: skip
    if unpriced:
        lines.append(f"  look up the price of {', '.join(sorted(set(unpriced)))} yourself")
    lines.append(f"  assumptions: {ASSUMPTIONS}")
    return lines
