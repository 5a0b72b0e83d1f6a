"""The reduce measurement: the reduce job against scikit-learn's PCA, in alternating
rounds, on features the featurize job wrote."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from bench.baselines import sklearn_pca
from bench.data import VAR, image_batch
from bench.launch import log, spark_submit
from bench.measure_featurize import FEW_TASKS, featurize_args

REDUCE_REPEAT = 2  # the reduce job's runs per spark-submit: the first cold, then warm


def reduce_input(rows: int, args) -> Path:
    """The features the featurize job writes for ``rows`` images (MobileNetV2@64: 1280
    values each, cheap to compute), made once and cached."""
    out = VAR / "reduce-input" / f"mobilenetv2-64-r{rows}"
    if (out / "features" / "_SUCCESS").is_file():
        return out / "features"
    folder = image_batch(rows)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log(f"reduce input: featurizing {rows} images at 64x64 (once; cached in {out})")
    # Untimed: bigger input partitions only make this one-off step faster.
    quick = argparse.Namespace(**{**vars(args), "conf": [*args.conf, FEW_TASKS]})
    spark_submit("featurize", featurize_args(folder, out, "mobilenetv2", 64, args),
                 out / "job.json", quick, None)  # fmt: skip
    return out / "features"


def bench_reduce(args) -> dict:
    """scikit-learn, the job, scikit-learn, the job: medians of each, so that a burst of
    load on a shared machine moves both sides. The job's time is ``reduce``'s run on a
    session already started (JVM and SparkContext start-up are reported apart): its
    Parquet read, both passes over the data (Python workers' start included), the eigh,
    the Parquet write, report and plots. The headline ratio divides it by scikit-learn's
    fit + transform of a matrix already in memory, the strictest reference; the ratios to
    read + fit + transform and to the script (read, fit, project, write) compare like
    with like."""
    features = reduce_input(args.reduce_rows, args)
    work = VAR / "runs" / f"reduce-r{args.reduce_rows}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sklearn, jobs = [], []
    for i in range(2):
        log(f"reduce: scikit-learn ({args.sklearn_repeats} times each), round {i + 1}")
        sklearn.append(sklearn_pca(features, args.sklearn_repeats))
        log(f"reduce: reduce job (spark-submit), round {i + 1}")
        out = work / f"round{i + 1}"
        jobs.append(spark_submit("reduce", ["--input", str(features), "--output",
                                            str(out / "pca"), "--report", str(out / "report")],
                                 out / "job.json", args, out / "profile",
                                 [f"BENCH_REPEAT={REDUCE_REPEAT}"]))  # fmt: skip
    sk = {
        name: float(np.median([t for run in sklearn for t in run["runs_s"][name]]))
        for name in sklearn[0]["runs_s"]
    }
    job_s = float(np.median([j["job_s"] for j in jobs]))
    warm_s = float(np.median([t for j in jobs for t in j["repeat_s"]]))
    result = {
        "warm_job_s": warm_s,
        "ratio_warm": warm_s / sk["auto"],
        "rows": sklearn[0]["shape"][0],
        "features": sklearn[0]["shape"][1],
        "sklearn": {"rounds": sklearn, "median_s": sk},
        "jobs": jobs,
        "job_s": job_s,
        "ratio": job_s / sk["auto"],
        "ratio_vs_covariance_eigh": job_s / sk["covariance_eigh"],
        "ratio_vs_read_fit_transform": job_s / (sk["read"] + sk["auto"]),
        "ratio_vs_script": job_s / sk["script"],
        "k_job": jobs[0]["result"].get("k"),
        "k_sklearn": sklearn[0]["k"],
        "sklearn_solver": sklearn[0]["solver"],
    }
    log(f"reduce: job {job_s:.1f} s, scikit-learn {sk['auto']:.2f} s (medians)")
    return result
