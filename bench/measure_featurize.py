"""The featurize measurements: raw Keras and raw LiteRT, each in two halves around the
job (once per job configuration), and the job's time against the number of images (a
linear fit)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from bench.baselines import PARITY_ROWS, convert, parity, raw_keras
from bench.data import VAR, image_batch
from bench.launch import log, spark_submit
from fruits_spark import rules
from fruits_spark.inference import runtimes

# far more work per image than MobileNetV2, so it gets fewer for a measurement of like length.
DEFAULT_IMAGES = {"mobilenetv2": 3000, "mobilenet": 3000, "vgg16": 600}

# An image file costs Spark its bytes plus this much when files are packed into input
# partitions; featurize.py sets 64 KB (one task per core for small images), Spark's
# default 4 MB makes a task of every 32 small images.
FEW_TASKS = "spark.sql.files.openCostInBytes=65536"
SPARK_DEFAULT_PARTITIONS = "spark.sql.files.openCostInBytes=4194304"
# The featurize job as shipped, with Spark's default partitioning (before tuning),
# without the JVM class archive (fruits.clusters.local.jvm_archive), and with Java's
# default tiered JIT in the driver (fruits.clusters.local.sparkenv.JIT_ENV), and with one
# runtime for every model: its Spark configuration, its environment, its arguments.
VARIANTS = {
    "shipped": [],
    "spark-default-partitions": [SPARK_DEFAULT_PARTITIONS],
    "no-jvm-archive": [],
    "tiered-jit": [],
    "keras-runtime": [],
    "litert-runtime": [],
    "int8": [],
}
VARIANT_ENV = {
    "no-jvm-archive": ["FRUITS_JVM_ARCHIVE=off"],
    "tiered-jit": ["FRUITS_JVM_JIT=tiered"],
}
# featurize's own arguments: one runtime for every model (shipped: auto, the model's faster)
VARIANT_ARGS = {
    "keras-runtime": ["--runtime", "keras"],
    "litert-runtime": ["--runtime", "litert"],
    # precision=int8 (docs/precision.md): mobilenet with real weights (--weights imagenet)
    "int8": ["--precision", "int8"],
}


def variants_for(model: str, variants: list[str], weights: str = "random") -> list[str]:
    """``variants`` less a runtime variant that would run what ``shipped`` (``auto``) already
    runs for ``model`` (the same job twice in one bench), and less ``int8`` where it was not
    measured (another model, or random weights: their features round to zero)."""
    shipped = runtimes.resolve(runtimes.DEFAULT_RUNTIME, model)

    def same_as_shipped(variant: str) -> bool:
        return VARIANT_ARGS.get(variant) == ["--runtime", shipped]

    if model not in rules.INT8_MODELS or weights != "imagenet":
        variants = [v for v in variants if v != "int8"]
    if "shipped" not in variants:
        return variants
    return [v for v in variants if not same_as_shipped(v)]


def featurize_args(folder: Path, out: Path, model: str, size: int, args) -> list[str]:
    a = ["--input", str(folder), "--output", str(out / "features"),
         "--rejected", str(out / "rejected"), "--model", model, "--weights", args.weights,
         "--image-size", str(size)]  # fmt: skip
    if args.batch_size:
        a += ["--batch-size", str(args.batch_size)]
    if args.tf_threads:
        a += ["--threads", str(args.tf_threads)]
    return a


def raw_summary(a: dict, b: dict) -> dict:
    """Two halves of one raw reference as one: its loop rate, and as one process over the
    whole batch would run (its start-up once: the mean of the halves', then both loops)."""
    images = a["images"] + b["images"]
    loops = a["loop_s"] + b["loop_s"]
    fixed_s = sum(h["startup_s"] + h["warmup_s"] for h in (a, b)) / 2
    # the whole process from outside: interpreter start and imports included
    process_fixed_s = sum(h["process_s"] - h["loop_s"] for h in (a, b)) / 2
    return {
        "a": a,
        "b": b,
        "rate": images / loops,
        "rate_end_to_end": images / (fixed_s + loops),
        "rate_whole_process": images / (process_fixed_s + loops),
        "fixed_s": fixed_s,
        "process_fixed_s": process_fixed_s,
        "cpu_ms_per_image": 1000 * (a["loop_cpu_s"] + b["loop_cpu_s"]) / images,
        "stage_ms_per_image": {
            s: 1000 * (a[s] + b[s]) / images
            for s in ("read_s", "decode_s", "preprocess_s", "predict_s")
        },
    }


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
    log(f"{tag}: converting the model for LiteRT (once; the job and raw LiteRT reuse it)")
    weights = ("--weights", args.weights)
    variants = variants_for(model, args.variants.split(","), args.weights)
    conversion = convert(model, size, work / "convert.json", *weights)
    if "int8" in variants:  # the int8 model too, so the int8 job never times its conversion
        conversion["int8"] = convert(model, size, work / "convert-int8.json", *weights,
                                     "--precision", "int8")  # fmt: skip
    log(f"{tag}: raw Keras, then raw LiteRT, first halves")
    raw_a = raw_keras(model, size, folder, "0/2", work / "raw-a.json", PARITY_ROWS, 0, "keras",
                      *weights)  # fmt: skip
    lite_a = raw_keras(model, size, folder, "0/2", work / "lite-a.json", 0, 0, "litert", *weights)
    jobs = {}
    for variant in variants:
        log(f"{tag}: featurize job, {variant} (spark-submit --master {args.master})")
        out = work / variant
        job_args = featurize_args(folder, out, model, size, args) + VARIANT_ARGS.get(variant, [])
        jobs[variant] = spark_submit("featurize", job_args,
                                     out / "job.json", with_variant(args, variant),
                                     out / "profile", VARIANT_ENV.get(variant, []))  # fmt: skip
    log(f"{tag}: raw LiteRT, then raw Keras, second halves")
    lite_b = raw_keras(model, size, folder, "1/2", work / "lite-b.json", 0, 0, "litert", *weights)
    raw_b = raw_keras(model, size, folder, "1/2", work / "raw-b.json", 0, 0, "keras", *weights)
    raw, lite = raw_summary(raw_a, raw_b), raw_summary(lite_a, lite_b)
    raw_rate, raw_rate_e2e = raw["rate"], raw["rate_end_to_end"]
    raw_cpu = raw["cpu_ms_per_image"] / 1000
    rows = []
    for variant, job in jobs.items():
        featurized = job["result"]["featurized"]
        job_cpu = job["cpu_s"] / featurized if job.get("cpu_s") else None
        end_to_end = featurized / job["job_s"]
        whole = featurized / job["total_s"]  # spark-submit's process, JVM start to exit
        profile = job.get("profile") or {}
        steady = profile.get("steady_rate")
        row = {
            "model": model,
            "size": size,
            "images": n,
            "variant": variant,
            "variant_conf": VARIANTS[variant],
            "variant_env": VARIANT_ENV.get(variant, []),
            "raw": raw,
            "litert": lite,
            "conversion": conversion,
            "job": job,
            "job_rate_end_to_end": end_to_end,
            "job_rate_steady": steady,
            "ratio_end_to_end": end_to_end / raw_rate,
            # like for like: both sides with their start-up (the job's JVM start excluded)
            "ratio_end_to_end_both": end_to_end / raw_rate_e2e,
            "ratio_steady": steady / raw_rate if steady else None,
            # the targets: whole processes against raw Keras, steady against LiteRT
            "job_rate_whole_process": whole,
            "ratio_whole_vs_keras": whole / raw["rate_whole_process"],
            "ratio_whole_vs_litert": whole / lite["rate_whole_process"],
            "ratio_steady_vs_litert": steady / lite["rate"] if steady else None,
            # the fixed cost three ways: a Python worker's own (process start to its first
            # batch out), the job's (featurize.run's start to the first batch out), and
            # the whole process's (spark-submit's launch to the first batch out)
            "first_batch_worker_s": min(
                (
                    w["first_start_s"] + w["first_batch_s"] - w["process_start_s"]
                    for w in (profile.get("per_worker") or {}).values()
                    if w.get("process_start_s") is not None
                ),
                default=None,
            ),  # fmt: skip
            "first_batch_run_s": profile.get("first_batch_end_s"),
            "first_batch_out_s": (
                job["jvm_start_s"] + job["session_start_s"] + profile["first_batch_end_s"]
                if "first_batch_end_s" in profile
                else None
            ),
            # CPU seconds per image, every thread and process: what contention moves least
            "raw_cpu_ms_per_image": 1000 * raw_cpu,
            "job_cpu_ms_per_image": 1000 * job_cpu if job_cpu else None,
            "ratio_cpu": raw_cpu / job_cpu if job_cpu else None,
            "parity": parity(work / "raw-a.npz", work / variant / "features"),
        }
        log(
            f"{tag} {variant}: raw Keras {raw_rate:.1f} img/s, raw LiteRT {lite['rate']:.1f}, "
            f"job {end_to_end:.1f} img/s end to end ({row['ratio_end_to_end']:.2f}x Keras), "
            f"steady {steady or 0:.1f} img/s ({row['ratio_steady_vs_litert'] or 0:.2f}x LiteRT), "
            f"whole process {row['ratio_whole_vs_keras']:.2f}x Keras'"
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
                           work / "profile", VARIANT_ENV.get(args.scaling_variant, []))  # fmt: skip
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
