"""A paper estimate of a full Fruits-360 run on EMR, EC2 and EMR Serverless, from the rate
measured here.

    python -m bench.emr_estimate                       # from bench/results.json
    python -m bench.emr_estimate --nodes 2,4,8 --images 90000

The featurize step is CPU-bound and parallel per image, so its time on a cluster is
``images / (measured images/s per vCPU x vCPUs per node x core nodes)`` plus fixed
costs. Both backends get the same rate and the same nodes (a primary + N core nodes on
EMR, a primary + N workers on EC2, ``FRUITS_COMPUTE=ec2``); EC2 pays the instances
without EMR's fee, has fixed minutes of its own, and can run its workers as spot
(``FRUITS_EC2_WORKER_SPOT``). EMR Serverless (``FRUITS_COMPUTE=serverless``) runs the
same vCPUs as workers (a driver + N executors of 4 vCPUs and 16 GB, the backend's
defaults), billed per vCPU-hour and GB-hour while the jobs run, with no cluster to
start or remove. Each is priced for both architectures the backends run
(``FRUITS_EMR_ARCH`` / ``FRUITS_EC2_ARCH``): x86_64 (m5.xlarge), whose per-vCPU rate is
the one measured here (this machine is x86_64), and arm64 (Graviton, m7g.xlarge), whose
rate is that same rate times an assumed factor, never measured. Everything not measured
here is an assumption, listed in ASSUMPTIONS and printed with the estimate: a paper
estimate, not a measurement.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).with_name("results.json")
FULL_FRUITS_360 = 90_000  # ~90k JPEGs (100x100) in the full data set

ASSUMPTIONS = {
    "instance": "m5.xlarge (x86_64) or m7g.xlarge (arm64), 4 vCPUs and 16 GiB each, a "
    "primary (EMR: master) + N core/worker nodes",
    # us-east-1 on-demand EC2 price of m5.xlarge (Linux), per node-hour
    "ec2_usd_per_node_hour": 0.192,
    # EMR's fee for m5.xlarge, per node-hour, on top of the EC2 price (us-east-1)
    "emr_fee_per_node_hour": 0.048,
    # arm64 (Graviton): us-east-1 on-demand price of m7g.xlarge, and EMR's fee for it
    "arm64_ec2_usd_per_node_hour": 0.1632,
    "arm64_emr_fee_per_node_hour": 0.0408,
    # an m7g vCPU (a whole Graviton3 core) against an m5 vCPU, for LiteRT's XNNPACK
    # kernels: not measured (nothing here runs arm64); 1.0 takes them as equal
    "arm64_rate_vs_x86_64": 1.0,
    # spot price of the EC2 workers as a discount on on-demand (the primary stays
    # on-demand): an assumption, it varies by region, zone and hour; a reclaimed
    # worker fails the run
    "spot_discount": 0.60,
    # an m5 vCPU (Xeon 3.1 GHz, AVX-512) taken as equal to one of this machine's
    "rate_per_vcpu": "this machine's marginal rate / its cores",
    "vcpus_per_node": 4,
    # EMR: cluster start + bootstrap (python3.11, then the requirements from the staged
    # wheels, offline) + teardown
    "emr_fixed_minutes": 12.0,
    # EC2, not measured, taken as similar to EMR's: no EMR provisioning, but every node
    # installs Java and python3.11 with dnf and the pinned requirements (pyspark
    # included) from the staged wheels at boot, the workers launch after the primary, and
    # the first spark-submit fetches hadoop-aws from Maven Central (unless
    # FRUITS_EC2_JARS_URI)
    "ec2_fixed_minutes": 12.0,
    # EMR Serverless, us-east-1, per vCPU-hour and per GB-hour of its workers (x86_64,
    # and arm64: Graviton), from AWS's Amazon EMR pricing page (its EMR Serverless
    # section, US East (N. Virginia)), as known when written: not re-read from this
    # machine (no internet here): check it before relying on the figures
    "serverless_usd_per_vcpu_hour": 0.052624,
    "serverless_usd_per_gb_hour": 0.0057785,
    "arm64_serverless_usd_per_vcpu_hour": 0.042094,
    "arm64_serverless_usd_per_gb_hour": 0.0046228,
    # a worker's size (FRUITS_SERVERLESS_WORKER_*): an m5.xlarge node's vCPUs and memory
    "serverless_worker_vcpus": 4,
    "serverless_worker_gb": 16,
    # not measured: the application's creation and start and the two jobs' worker starts
    # (wall time), of which the workers' starts are billed; no bootstrap (the archive)
    "serverless_fixed_minutes": 4.0,
    "serverless_billed_fixed_minutes": 2.0,
    # reduce on ~90k x 1280 features, from make bench's reduce time scaled by rows
    "reduce_minutes": 1.0,
    "billing": "per second, every node for the cluster's whole life (EMR, EC2); every "
    "worker while a job runs (Serverless); EBS, S3 requests and NAT traffic not counted",
}


ARCHES = ("x86_64", "arm64")


def prices(arch: str) -> tuple[float, float]:
    """(EC2 USD per node-hour, EMR's fee per node-hour) of ``arch``'s instance type."""
    a = ASSUMPTIONS
    if arch == "arm64":
        return a["arm64_ec2_usd_per_node_hour"], a["arm64_emr_fee_per_node_hour"]
    return a["ec2_usd_per_node_hour"], a["emr_fee_per_node_hour"]


def serverless_prices(arch: str) -> tuple[float, float]:
    """(USD per vCPU-hour, USD per GB-hour) of EMR Serverless's ``arch`` workers."""
    a = ASSUMPTIONS
    if arch == "arm64":
        return a["arm64_serverless_usd_per_vcpu_hour"], a["arm64_serverless_usd_per_gb_hour"]
    return a["serverless_usd_per_vcpu_hour"], a["serverless_usd_per_gb_hour"]


def arch_rate(rate_per_vcpu: float, arch: str) -> float:
    """The per-vCPU rate on ``arch``: measured here on x86_64; arm64's is assumed."""
    return rate_per_vcpu * (ASSUMPTIONS["arm64_rate_vs_x86_64"] if arch == "arm64" else 1.0)


@dataclass(frozen=True)
class Estimate:
    nodes: int
    featurize_min: float
    emr_total_min: float
    emr_usd: float
    ec2_total_min: float
    ec2_usd: float  # primary and workers on-demand
    ec2_spot_usd: float  # primary on-demand, workers spot
    serverless_total_min: float  # the run's wall time, application included
    serverless_usd: float  # a driver and ``nodes`` executors, while the jobs run


def estimate(rate_per_vcpu: float, images: int, nodes: int, arch: str = "x86_64") -> Estimate:
    """The cost of one run on a primary + ``nodes`` core nodes (EMR) or workers (EC2) of
    ``arch`` (``rate_per_vcpu``: the rate measured here, on x86_64)."""
    a = ASSUMPTIONS
    rate = arch_rate(rate_per_vcpu, arch)
    featurize_min = images / (rate * a["vcpus_per_node"] * nodes) / 60
    emr_total_min = a["emr_fixed_minutes"] + featurize_min + a["reduce_minutes"]
    ec2_total_min = a["ec2_fixed_minutes"] + featurize_min + a["reduce_minutes"]
    ec2_hour, fee = prices(arch)
    emr_hour = ec2_hour + fee
    spot_hour = ec2_hour * (1 - a["spot_discount"])
    jobs_min = featurize_min + a["reduce_minutes"]
    vcpu_hour, gb_hour = serverless_prices(arch)
    worker_hour = a["serverless_worker_vcpus"] * vcpu_hour + a["serverless_worker_gb"] * gb_hour
    billed_min = a["serverless_billed_fixed_minutes"] + jobs_min
    return Estimate(
        nodes=nodes,
        featurize_min=featurize_min,
        emr_total_min=emr_total_min,
        emr_usd=(nodes + 1) * emr_hour * emr_total_min / 60,
        ec2_total_min=ec2_total_min,
        ec2_usd=(nodes + 1) * ec2_hour * ec2_total_min / 60,
        ec2_spot_usd=(ec2_hour + nodes * spot_hour) * ec2_total_min / 60,
        serverless_total_min=a["serverless_fixed_minutes"] + jobs_min,
        serverless_usd=(nodes + 1) * worker_hour * billed_min / 60,
    )


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
    """Both architectures and the three ways to pay from the same per-vCPU rates, their
    prices in the same rows."""
    factor = ASSUMPTIONS["arm64_rate_vs_x86_64"]
    lines = [
        f"EMR, EC2 and EMR Serverless paper estimate, {images:,} images (assumptions below, "
        "not measured):"
    ]
    for arch in ARCHES:
        ec2_hour, fee = prices(arch)
        vcpu_hour, gb_hour = serverless_prices(arch)
        lines.append(
            f"  {arch}: ${ec2_hour:.4f}/node-h EC2, +${fee:.4f}/node-h EMR fee; Serverless "
            f"${vcpu_hour:.6f}/vCPU-h + ${gb_hour:.7f}/GB-h"
        )
    for name, rate in rates_from(results).items():
        lines.append(
            f"  {name}: x86_64 {rate:.1f} img/s per vCPU measured here; arm64 "
            f"{arch_rate(rate, 'arm64'):.1f} assumed (x{factor:.2f}, not measured)"
        )
        for n in nodes:
            for arch in ARCHES:
                e = estimate(rate, images, n, arch)
                lines.append(
                    f"    {arch:<6} {n} core nodes + primary: featurize {e.featurize_min:5.1f} "
                    f"min | EMR: cluster {e.emr_total_min:5.1f} min, ${e.emr_usd:.2f} | "
                    f"EC2: cluster {e.ec2_total_min:5.1f} min, ${e.ec2_usd:.2f} on-demand, "
                    f"${e.ec2_spot_usd:.2f} with spot workers | Serverless ({n} executors "
                    f"+ driver): run {e.serverless_total_min:5.1f} min, ${e.serverless_usd:.2f}"
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
