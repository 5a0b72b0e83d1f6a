"""The featurize measurements: raw Keras in two halves around the job (once per job
configuration), and the job's time against the number of images (a linear fit)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from bench.baselines import PARITY_ROWS, parity, raw_keras
from bench.data import VAR, image_batch
from bench.launch import log, spark_submit

# Images per measurement at 224 (images_for scales them by (224/size)^2): VGG16 does
# far more work per image than MobileNetV2, so it gets fewer for a measurement of like length.
DEFAULT_IMAGES = {"mobilenetv2": 3000, "vgg16": 600}

# An image file costs Spark its bytes plus this much when files are packed into input
# partitions; featurize.py sets 64 KB (one task per core for small images), Spark's
# default 4 MB makes a task of every 32 small images.
FEW_TASKS = "spark.sql.files.openCostInBytes=65536"
SPARK_DEFAULT_PARTITIONS = "spark.sql.files.openCostInBytes=4194304"
# The featurize job as shipped, and with Spark's default partitioning (before tuning).
VARIANTS = {"shipped": [], "spark-default-partitions": [SPARK_DEFAULT_PARTITIONS]}


def featurize_args(folder: Path, out: Path, model: str, size: int, args) -> list[str]:
    a = ["--input", str(folder), "--output", str(out / "features"),
         "--rejected", str(out / "rejected"), "--model", model, "--weights", "random",
         "--image-size", str(size)]  # fmt: skip
    if args.batch_size:
        a += ["--batch-size", str(args.batch_size)]
    if args.tf_threads:
        a += ["--tf-threads", str(args.tf_threads)]
    return a


def images_for(model: str, size: int, args) -> int:
    if args.images:
        return args.images
    return int(min(20_000, max(600, DEFAULT_IMAGES[model] * (224 / size) ** 2)) // 6 * 6)


def with_variant(args: argparse.Namespace, variant: str) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "conf": [*args.conf, *VARIANTS[variant]]})


def bench_featurize(model: str, size: int, args) -> list[dict]:
    """Raw Keras (first half), the job once per variant, raw Keras (second half)."""
    n = images_for(model, size, args)
    folder = image_batch(n)
    n = len(list(folder.rglob("*.jpg")))
    tag = f"{model}-{size}-n{n}"
    work = VAR / "runs" / tag
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log(f"{tag}: raw Keras, first half")
    raw_a = raw_keras(model, size, folder, "0/2", work / "raw-a.json", save=PARITY_ROWS)
    jobs = {}
    for variant in args.variants.split(","):
        log(f"{tag}: featurize job, {variant} (spark-submit --master {args.master})")
        out = work / variant
        jobs[variant] = spark_submit("featurize", featurize_args(folder, out, model, size, args),
                                     out / "job.json", with_variant(args, variant),
                                     out / "profile")  # fmt: skip
    log(f"{tag}: raw Keras, second half")
    raw_b = raw_keras(model, size, folder, "1/2", work / "raw-b.json")
    raw_images = raw_a["images"] + raw_b["images"]
    raw_rate = raw_images / (raw_a["loop_s"] + raw_b["loop_s"])
    # Raw Keras end to end, as one process over the whole batch would run: its TensorFlow
    # import, model build and first trace once (the mean of the halves'), then both loops.
    raw_fixed_s = sum(h["startup_s"] + h["warmup_s"] for h in (raw_a, raw_b)) / 2
    raw_rate_e2e = raw_images / (raw_fixed_s + raw_a["loop_s"] + raw_b["loop_s"])
    raw_cpu = (raw_a["loop_cpu_s"] + raw_b["loop_cpu_s"]) / raw_images
    raw = {
        "a": raw_a,
        "b": raw_b,
        "rate": raw_rate,
        "rate_end_to_end": raw_rate_e2e,
        "fixed_s": raw_fixed_s,
        "cpu_ms_per_image": 1000 * raw_cpu,
        "stage_ms_per_image": {
            s: 1000 * (raw_a[s] + raw_b[s]) / raw_images
            for s in ("read_s", "decode_s", "preprocess_s", "predict_s")
        },
    }
    rows = []
    for variant, job in jobs.items():
        featurized = job["result"]["featurized"]
        job_cpu = job["cpu_s"] / featurized if job.get("cpu_s") else None
        end_to_end = featurized / job["job_s"]
        steady = (job.get("profile") or {}).get("steady_rate")
        row = {
            "model": model,
            "size": size,
            "images": n,
            "variant": variant,
            "variant_conf": VARIANTS[variant],
            "raw": raw,
            "job": job,
            "job_rate_end_to_end": end_to_end,
            "job_rate_steady": steady,
            "ratio_end_to_end": end_to_end / raw_rate,
            # like for like: both sides with their start-up (the job's JVM start excluded)
            "ratio_end_to_end_both": end_to_end / raw_rate_e2e,
            "ratio_steady": steady / raw_rate if steady else None,
            # CPU seconds per image, every thread and process: what contention moves least
            "raw_cpu_ms_per_image": 1000 * raw_cpu,
            "job_cpu_ms_per_image": 1000 * job_cpu if job_cpu else None,
            "ratio_cpu": raw_cpu / job_cpu if job_cpu else None,
            "parity": parity(work / "raw-a.npz", work / variant / "features"),
        }
        log(
            f"{tag} {variant}: raw {raw_rate:.1f} img/s, job {end_to_end:.1f} img/s end to end "
            f"({row['ratio_end_to_end']:.2f}x), steady {steady or 0:.1f} img/s "
            f"({row['ratio_steady'] or 0:.2f}x)"
        )
        rows.append(row)
    return rows


def bench_scaling(args) -> dict:
    model, size = args.scaling_model, args.scaling_size
    points = []
    for n in (int(x) for x in args.scaling_points.split(",")):
        folder = image_batch(n)
        n = len(list(folder.rglob("*.jpg")))
        work = VAR / "runs" / f"scaling-{model}-{size}-n{n}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        log(f"scaling: featurize {n} images ({model}@{size})")
        job = spark_submit("featurize", featurize_args(folder, work, model, size, args),
                           work / "job.json", with_variant(args, args.scaling_variant),
                           work / "profile")  # fmt: skip
        points.append({"images": n, "job_s": job["job_s"], "job": job,
                       "steady_rate": job["profile"].get("steady_rate")})  # fmt: skip
    for p in points:
        listing = [d["s"] for d in p["job"].get("driver_phases", []) if d["phase"] == "list_images"]
        p["list_images_s"] = sum(listing)
    x = np.array([p["images"] for p in points], float)
    return {
        "model": model,
        "size": size,
        "variant": args.scaling_variant,
        "points": points,
        "fit": linear_fit(x, np.array([p["job_s"] for p in points], float)),
        # the driver's listing (Spark's file index, one py4j call): its own line
        "fit_without_listing": linear_fit(
            x, np.array([p["job_s"] - p["list_images_s"] for p in points], float)
        ),
        "fit_listing": linear_fit(x, np.array([p["list_images_s"] for p in points], float)),
    }


def linear_fit(x: np.ndarray, y: np.ndarray) -> dict:
    """Least squares ``y = fixed + per_image * x``, R^2 and the worst relative residual."""
    slope, intercept = np.polyfit(x, y, 1)
    fitted = intercept + slope * x
    ss_res = float(np.sum((y - fitted) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "fixed_s": float(intercept),
        "per_image_ms": float(slope * 1000),
        "marginal_rate": float(1 / slope) if slope > 0 else None,
        "r2": 1 - ss_res / ss_tot if ss_tot else None,
        "max_relative_residual": float(np.max(np.abs(y - fitted) / np.abs(y))),
    }
