"""A paper estimate of a full Fruits-360 run on EMR, from the rate measured here.

    python -m bench.emr_estimate                       # from bench/results.json
    python -m bench.emr_estimate --nodes 2,4,8 --images 90000

The featurize step is CPU-bound and parallel per image, so its time on EMR is
``images / (measured images/s per vCPU x vCPUs per node x core nodes)`` plus fixed
costs. Everything not measured here is an assumption, listed in ASSUMPTIONS and
printed with the estimate: a paper estimate, not a measurement.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).with_name("results.json")
FULL_FRUITS_360 = 90_000  # ~90k JPEGs (100x100) in the full data set

ASSUMPTIONS = {
    "instance": "m5.xlarge (4 vCPUs, 16 GiB), master + N core nodes",
    # us-east-1 on-demand EC2 price plus the EMR fee for m5.xlarge, per node-hour
    "usd_per_node_hour": 0.192 + 0.048,
    # an m5 vCPU (Xeon 3.1 GHz, AVX-512) taken as equal to one of this machine's
    "rate_per_vcpu": "this machine's marginal rate / its cores",
    "vcpus_per_node": 4,
    # cluster start + bootstrap (pip install of the job requirements) + teardown
    "fixed_minutes": 12.0,
    # reduce on ~90k x 1280 features, from make bench's reduce time scaled by rows
    "reduce_minutes": 1.0,
    "billing": "per second, every node for the cluster's whole life",
}


@dataclass(frozen=True)
class Estimate:
    nodes: int
    featurize_min: float
    total_min: float
    usd: float


def estimate(rate_per_vcpu: float, images: int, nodes: int) -> Estimate:
    a = ASSUMPTIONS
    featurize_min = images / (rate_per_vcpu * a["vcpus_per_node"] * nodes) / 60
    total_min = a["fixed_minutes"] + featurize_min + a["reduce_minutes"]
    usd = (nodes + 1) * a["usd_per_node_hour"] * total_min / 60
    return Estimate(nodes, featurize_min, total_min, usd)


def rates_from(results: dict) -> dict[str, float]:
    """Images/s per vCPU per model@size: the scaling fit's marginal rate where there is
    one (start-up excluded), else the job's steady rate."""
    cores = results["machine"]["cores"]
    rates = {}
    for row in results.get("featurize", []):
        if row["variant"] == "shipped" and row.get("job_rate_steady"):
            rates[f"{row['model']}@{row['size']}"] = row["job_rate_steady"] / cores
    scaling = results.get("scaling")
    if scaling and scaling["fit"].get("marginal_rate"):
        rates[f"{scaling['model']}@{scaling['size']}"] = scaling["fit"]["marginal_rate"] / cores
    return rates


def table(results: dict, images: int, nodes: list[int]) -> str:
    lines = [f"EMR paper estimate, {images:,} images (assumptions below, not measured):"]
    for name, rate in rates_from(results).items():
        lines.append(f"  {name}: {rate:.1f} img/s per vCPU measured here")
        for n in nodes:
            e = estimate(rate, images, n)
            lines.append(
                f"    {n} core nodes: featurize {e.featurize_min:5.1f} min, cluster "
                f"{e.total_min:5.1f} min, ${e.usd:.2f}"
            )
    lines += [f"  assumption: {k} = {v}" for k, v in ASSUMPTIONS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--images", type=int, default=FULL_FRUITS_360)
    p.add_argument("--nodes", default="2,4,8")
    args = p.parse_args(argv)
    results = json.loads(args.results.read_text())
    print(table(results, args.images, [int(n) for n in args.nodes.split(",")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
