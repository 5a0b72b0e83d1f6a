"""What live progress costs featurize (issue 16): the same job with ``--progress`` (the
workers' UDP datagram per Arrow batch, the driver's listener and its writes) and without,
alternated round by round so that a neighbour's load falls on both alike.

    python -m bench.measure_progress [--images 1200] [--rounds 2] [--interval 15]

The figure is the steady rate (images per second between the first and the last Arrow
batch, from the workers' profiles) with reporting over the rate without: the target is
>= 0.97. On a shared host two identical runs can differ by more than that, so the bench
also measures what reporting adds to a worker directly -- one ``Tally.add`` (a UDP
datagram) per Arrow batch, timed over many calls against a live driver listener -- and
divides it by the job's own time per batch: a bound that the neighbours' load cannot
blur. ``bench.run`` adds both to ``make bench``'s results as ``progress_cost``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics

from bench.data import VAR, image_batch
from bench.launch import log, spark_submit
from bench.measure_featurize import featurize_args


def send_cost(calls: int = 20000) -> dict:
    """Seconds per ``Tally.add`` against a live listener (the driver's side, counting)."""
    import time

    from fruits_spark.progress import Reporter

    reporter = Reporter("bench", lambda data: None, interval=3600, counting=True)
    try:
        tally = reporter.tally()
        tally.add(1)  # the worker's socket, made once per process
        start = time.perf_counter()
        for _ in range(calls):
            tally.add(64)
        per_call = (time.perf_counter() - start) / calls
    finally:
        reporter.stop()
    return {"calls": calls, "seconds_per_add": per_call}


def bench_progress(args, *, images: int = 1200, rounds: int = 2, interval: float = 15) -> dict:
    model, size = "mobilenetv2", 224
    folder = image_batch(images)
    n = len(list(folder.rglob("*.jpg")))
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for r in range(rounds):
        order = ("off", "on") if r % 2 == 0 else ("on", "off")
        for variant in order:
            out = VAR / "runs" / f"progress-{variant}-{r}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            extra = []
            if variant == "on":
                extra = ["--progress", str(out / "progress"), "--progress-interval", str(interval)]
            log(f"progress cost: round {r + 1}/{rounds}, reporting {variant} ({n} images)")
            job = spark_submit("featurize", [*featurize_args(folder, out, model, size, args),
                               *extra], out / "job.json", args, out / "profile")  # fmt: skip
            runs[variant].append(job)

    def rate(jobs: list[dict], key: str) -> float | None:
        values = [j["profile"].get("steady_rate") if key == "steady" else
                  j["result"]["featurized"] / j["job_s"] for j in jobs]  # fmt: skip
        values = [v for v in values if v]
        return statistics.median(values) if values else None

    row = {"model": model, "size": size, "images": n, "rounds": rounds, "interval_s": interval}
    for key in ("steady", "end_to_end"):
        off, on = rate(runs["off"], key), rate(runs["on"], key)
        row[f"{key}_off"], row[f"{key}_on"] = off, on
        row[f"ratio_{key}"] = on / off if on and off else None
    row["jobs"] = runs
    # the bound: one send per Arrow batch over the job's seconds per batch per worker
    cost = send_cost()
    profiles = [j["profile"] for j in runs["on"] if j.get("profile")]
    rows_per_batch = statistics.median(p["mean_rows_per_batch"] for p in profiles)
    per_image_worker_s = statistics.median(p["workers"] / p["steady_rate"] for p in profiles)
    cost["fraction_of_batch_time"] = cost["seconds_per_add"] / (rows_per_batch * per_image_worker_s)
    row["send_cost"] = cost
    return row


def line(row: dict) -> str:
    return (
        f"progress reporting ({row['model']}@{row['size']}, {row['images']} images, "
        f"every {row['interval_s']:g} s, median of {row['rounds']}): steady "
        f"{row['steady_on'] or 0:.1f} vs {row['steady_off'] or 0:.1f} img/s without "
        f"(ratio {row['ratio_steady'] or 0:.3f}); end to end {row['end_to_end_on']:.1f} vs "
        f"{row['end_to_end_off']:.1f} (ratio {row['ratio_end_to_end']:.3f}); a worker's "
        f"send per Arrow batch: {1e6 * row['send_cost']['seconds_per_add']:.1f} us = "
        f"{100 * row['send_cost']['fraction_of_batch_time']:.4f}% of its time per batch "
        f"(target <= 3%)"
    )


def main(argv: list[str] | None = None) -> int:
    import json

    from bench.options import parse_args

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=1200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--interval", type=float, default=15)
    own, rest = p.parse_known_args(argv)
    args = parse_args(rest)
    row = bench_progress(args, images=own.images, rounds=own.rounds, interval=own.interval)
    out = VAR / "progress_cost.json"
    out.write_text(json.dumps(row, indent=1, default=str))
    print(line(row))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
