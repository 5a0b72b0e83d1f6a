"""Performance, side by side in one run: the Spark jobs against what the model allows.

    python -m bench.run                      # make bench: featurize (MobileNetV2, VGG16 @224)
                                             # and reduce (20,000 x 1280), a few minutes
    python -m bench.run --quick              # MobileNetV2 only, fewer images, smaller PCA
    python -m bench.run --scaling            # also featurize 1k, 4k, 16k images: a linear fit
    python -m bench.run --models vgg16 --sizes 100 --images 2000 --no-reduce

Featurize: (a) raw single-process Keras (``bench.raw_keras``: decode, preprocess,
predict_on_batch, batch 64, same network, size and seeded weights as the job's
``--weights random``) against (b) ``spark_jobs/featurize.py`` run by ``spark-submit
--master local[*]`` (``bench/spark_driver.py`` times ``featurize.run`` on the started
session, so JVM start-up is measured and reported apart). Raw Keras runs in two halves,
one before and one after the job, so drifting load on a shared machine hits both sides.
Each job run records per-batch timings in every Python worker
(``FRUITS_INFERENCE_PROFILE``), which gives the steady-state rate (images / time from
the first batch to the last) and where a task's time goes.

Reduce: (c) ``spark_jobs/reduce.py`` (``reduce``'s run on the started session) against
(d) ``sklearn.decomposition.PCA(n_components=0.95)`` fit + transform of the same matrix,
the features the featurize job wrote for 20,000 images (MobileNetV2@64, 1280 features).

Prints a table and writes ``bench/results.json``; everything is a ratio within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from bench import emr_estimate
from bench.data import ROOT, VAR, image_batch
from fruits.sparkenv import spark_env

TARGET_FEATURIZE = 0.9  # featurize images/s >= 0.9 x raw Keras images/s
TARGET_REDUCE = 2.0  # reduce time <= 2 x scikit-learn's
DEFAULT_IMAGES = {"mobilenetv2": 3000, "vgg16": 600}  # at 224: ~30-60 s of raw Keras each
QUICK_IMAGES = 600
SCALING_POINTS = (1000, 4000, 16000)
PARITY_ROWS = 64
RTOL, ATOL = 1e-3, 1e-4
VERSIONS = ("pyspark", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "pandas", "pyarrow")
# An image file costs Spark its bytes plus this much when files are packed into input
# partitions; featurize.py sets 64 KB (one task per core for small images), Spark's
# default 4 MB makes a task of every 32 small images.
FEW_TASKS = "spark.sql.files.openCostInBytes=65536"
SPARK_DEFAULT_PARTITIONS = "spark.sql.files.openCostInBytes=4194304"
# The featurize job as shipped, and with Spark's default partitioning (before tuning).
VARIANTS = {"shipped": [], "spark-default-partitions": [SPARK_DEFAULT_PARTITIONS]}
PROFILE_ENV = {"featurize": "FRUITS_INFERENCE_PROFILE", "reduce": "FRUITS_REDUCE_PROFILE"}
REDUCE_REPEAT = 2  # the reduce job's runs per spark-submit: the first cold, then warm
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="mobilenetv2,vgg16")
    p.add_argument("--sizes", default="224", help="image sizes, comma separated")
    p.add_argument("--images", type=int, default=None,
                   help=f"images per featurize measurement (default {DEFAULT_IMAGES} at 224, "
                        "scaled by (224/size)^2)")  # fmt: skip
    quick = f"MobileNetV2 only, {QUICK_IMAGES} images, reduce on 5,000 rows"
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--no-scaling", dest="scaling", action="store_false",
                   help="skip featurize cost against image count (1k, 4k, 16k images)")  # fmt: skip
    p.add_argument("--scaling-points", default=",".join(map(str, SCALING_POINTS)))
    p.add_argument("--scaling-model", default="mobilenetv2")
    p.add_argument("--scaling-size", type=int, default=224)
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"featurize job configurations to run: {VARIANTS}")  # fmt: skip
    p.add_argument("--scaling-variant", default="shipped", choices=sorted(VARIANTS))
    p.add_argument("--reduce-rows", type=int, default=20_000)
    p.add_argument("--sklearn-repeats", type=int, default=3)
    p.add_argument("--no-featurize", action="store_true")
    p.add_argument("--no-reduce", action="store_true")
    p.add_argument("--batch-size", type=int, default=None, help="featurize --batch-size")
    p.add_argument("--tf-threads", type=int, default=None, help="featurize --tf-threads")
    p.add_argument("--conf", action="append", default=[], help="extra spark-submit conf k=v")
    p.add_argument("--env", action="append", default=[], help="extra job environment K=V")
    p.add_argument("--master", default="local[*]")
    p.add_argument("--driver-memory", default="4g")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    args = p.parse_args(argv)
    if args.quick:
        args.models = "mobilenetv2"
        args.scaling = False
        args.images = args.images or QUICK_IMAGES
        args.reduce_rows = min(args.reduce_rows, 5000)
    return args


# --- running things --------------------------------------------------------------------


def job_env(extra: list[str]) -> dict[str, str]:
    """The Spark environment of the cluster and the tests, with the jobs importable
    (the bench imports its own probes from the repository) and ``--env K=V`` on top."""
    paths = [str(ROOT / "spark_jobs"), str(ROOT / "plugins"), str(ROOT)]
    env = spark_env({"PYTHONPATH": os.pathsep.join(paths)})
    for item in extra:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def run_checked(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-5000:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
    return done


def raw_keras(
    model: str, size: int, folder: Path, part: str, out: Path, save: int = 0, threads: int = 0
) -> dict:
    cmd = [sys.executable, "-m", "bench.raw_keras", "--model", model, "--size", str(size),
           "--input", str(folder), "--json", str(out), "--part", part,
           "--threads", str(threads), "--save-features", str(save)]  # fmt: skip
    load = os.getloadavg()[0]
    t0 = time.time()
    run_checked(cmd, job_env([]))
    result = json.loads(out.read_text())
    result["process_s"] = time.time() - t0
    result["loadavg_before"] = load
    return result


def spark_submit(
    job: str,
    job_args: list[str],
    out: Path,
    args: argparse.Namespace,
    profile: Path | None,
    extra_env: list[str] = (),
) -> dict:
    """One job in its own spark-submit; times from the driver script and from outside."""
    confs = {**SPARK_CONF, **dict(c.split("=", 1) for c in args.conf)}
    cmd = [str(Path(sys.executable).parent / "spark-submit"), "--master", args.master,
           "--driver-memory", args.driver_memory]  # fmt: skip
    for key, value in confs.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd += [str(ROOT / "bench" / "spark_driver.py"), str(out), job, *job_args]
    extra = [*args.env, *extra_env]
    if profile is not None:
        shutil.rmtree(profile, ignore_errors=True)
        extra.append(f"{PROFILE_ENV[job]}={profile}")
    load = os.getloadavg()[0]
    launched = time.time()
    run_checked(cmd, job_env(extra))
    exited = time.time()
    d = json.loads(out.read_text())
    d.update(
        launched=launched,
        exited=exited,
        loadavg_before=load,
        jvm_start_s=d["python_start"] - launched,
        session_start_s=d["session_ready"] - d["python_start"],
        job_s=d["run_end"] - d["run_start"],
        stop_s=exited - d["run_end"],
        total_s=exited - launched,
        spark_submit_confs=confs,
        env=extra,
    )
    if profile is not None:
        summarize = summarize_profile if job == "featurize" else summarize_reduce_profile
        d["profile"] = summarize(profile, d["run_start"], d["run_end"])
    return d


def summarize_reduce_profile(folder: Path, run_start: float, run_end: float) -> dict:
    """Per pass of the reduce job's first run (``summary``, ``project``): when the Python
    workers started, when the pass's function was called in them, when its first Arrow
    batch arrived, when the last task ended, and the seconds spent computing."""
    passes: dict[str, list[dict]] = {}
    for f in sorted(folder.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if run_start <= r["called"] <= run_end:
                passes.setdefault(r["event"], []).append(r)

    def at(rows: list[dict], key: str, pick) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return pick(values) - run_start if values else None

    return {
        name: {
            "tasks": len(rows),
            "rows": sum(r["rows"] for r in rows),
            "workers": len({r.get("process_start") for r in rows}),
            "process_start_s": at(rows, "process_start", max),
            "called_s": at(rows, "called", min),
            "first_batch_s": at(rows, "first_batch", min),
            "end_s": at(rows, "end", max),
            "compute_s": sum(r["compute_s"] for r in rows),
        }
        for name, rows in passes.items()
    }


def summarize_profile(folder: Path, run_start: float, run_end: float) -> dict:
    """Where the workers' time went, from the per-batch lines inference.py wrote."""
    records, builds, tasks = [], [], []
    for f in sorted(folder.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            record = {**json.loads(line), "pid": f.stem}
            event = record.get("event")
            if event == "model":
                builds.append(record)
            elif event == "task":
                tasks.append(record)
            else:
                records.append(record)
    if not records:
        return {}
    rows = sum(r["rows"] for r in records)
    first, last = min(r["start"] for r in records), max(r["end"] for r in records)
    stages = ("stall_s", "read_s", "decode_s", "preprocess_s", "predict_s", "yield_s")
    totals = {s: sum(r.get(s, 0.0) for r in records) for s in stages}
    per_worker = {}
    for pid in sorted({r["pid"] for r in records}):
        mine = [r for r in records if r["pid"] == pid]
        per_worker[pid] = {
            "batches": len(mine),
            "rows": sum(r["rows"] for r in mine),
            "first_start_s": min(r["start"] for r in mine) - run_start,
            "last_end_s": max(r["end"] for r in mine) - run_start,
            "first_batch_s": min(mine, key=lambda r: r["start"])["end"]
            - min(r["start"] for r in mine),
        }
    # Between tasks: from one task's generator ending to the next one's start in the same
    # worker (Spark's per-task work: JVM, result caching, Parquet commit, worker set-up).
    gaps = []
    for pid in per_worker:
        mine = sorted((t for t in tasks if t["pid"] == pid), key=lambda t: t["start"])
        gaps += [b["start"] - a["end"] for a, b in zip(mine, mine[1:], strict=False)]
        per_worker[pid]["tasks"] = len(mine)
        per_worker[pid]["cpu_s"] = mine[-1].get("cpu") if mine else None
    for b in builds:
        if b["pid"] in per_worker:
            started = b.get("process_start")
            per_worker[b["pid"]].update(
                process_start_s=None if started is None else started - run_start,
                module_import_s=b["module_import"] - run_start,
                model_start_s=b["start"] - run_start,
                tf_import_s=b["tf_import_s"],
                model_build_s=b["end"] - b["start"] - b["tf_import_s"],
            )
    return {
        "workers": len(per_worker),
        "batches": len(records),
        "rows": rows,
        "mean_rows_per_batch": rows / len(records),
        "before_first_batch_s": first - run_start,
        "busy_s": last - first,
        "after_last_batch_s": run_end - last,
        "steady_rate": rows / (last - first) if last > first else None,
        "tasks": len(tasks),
        "workers_cpu_s": sum(w.get("cpu_s") or 0 for w in per_worker.values()),
        "between_tasks_s": sum(gaps),
        "between_tasks_median_s": float(np.median(gaps)) if gaps else None,
        "stage_s": totals,  # summed over workers (CPU-ish seconds of the tasks)
        "stage_ms_per_image": {s: 1000 * v / rows for s, v in totals.items()},
        "per_worker": per_worker,
    }


# --- featurize ---------------------------------------------------------------------------


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


def parity(raw_npz: Path, features_dir: Path) -> dict:
    """The job's vectors against raw Keras's for the same files."""
    import pandas as pd

    saved = np.load(raw_npz)
    job = pd.read_parquet(features_dir, columns=["path", "features"])
    by_path = {p.removeprefix("file:"): v for p, v in zip(job.path, job.features, strict=True)}
    expected = saved["features"]
    got = np.stack([by_path[p] for p in saved["paths"]])
    scale = float(np.max(np.abs(expected)))
    return {
        "rows": len(expected),
        "allclose": bool(np.allclose(got, expected, rtol=RTOL, atol=ATOL)),
        "max_abs_diff": float(np.max(np.abs(got - expected))),
        # MobileNetV2 with seeded random weights gives features of ~1e-11, all under
        # atol=1e-4: the contract's check is vacuous there, so also check at their scale.
        "feature_scale": scale,
        "allclose_at_scale": bool(np.allclose(got, expected, rtol=RTOL, atol=ATOL * scale)),
    }


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


# --- reduce ------------------------------------------------------------------------------


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


def read_matrix(features: Path):
    """The Parquet features as pandas (path, label) and a float32 matrix, the way a
    single-process script would read them: Arrow's flat value buffer reshaped (as the
    job does), not ``np.stack`` over one numpy array per row, which is slower and would
    make scikit-learn's side look worse than it need be."""
    import pyarrow.parquet as pq

    table = pq.read_table(features, columns=["path", "label", "features"])
    vectors = table.column("features").combine_chunks()
    x = vectors.flatten().to_numpy().reshape(len(vectors), -1)
    return table.select(["path", "label"]).to_pandas(), x


def sklearn_pca(features: Path, repeats: int, variance: float = 0.95) -> dict:
    """scikit-learn on the same matrix, ``repeats`` times each: ``PCA(n_components=0.95)``
    fit + transform (its default solver; the reference the target is set against), the
    same with ``svd_solver="covariance_eigh"`` (the job's algorithm) and on float64 (the
    job's precision); reading the Parquet into a matrix (``read``, timed apart: the
    fit+transform reference starts from a matrix in memory, the job from Parquet); and a
    script doing the job's work bar the report: read Parquet, fit, project, write
    Parquet."""
    from sklearn.decomposition import PCA

    frame, x = read_matrix(features)
    cases = {
        "auto": ({}, x),
        "covariance_eigh": ({"svd_solver": "covariance_eigh"}, x),
        "auto_float64": ({}, x.astype(np.float64)),
    }
    runs: dict = {name: [] for name in [*cases, "read", "script"]}
    k, solver = None, None
    for _ in range(repeats):
        for name, (kwargs, data) in cases.items():
            t = time.perf_counter()
            pca = PCA(n_components=variance, **kwargs)
            pca.fit_transform(data)
            runs[name].append(time.perf_counter() - t)
            if name == "auto":
                k, solver = int(pca.n_components_), pca._fit_svd_solver
        t = time.perf_counter()
        read_matrix(features)
        runs["read"].append(time.perf_counter() - t)
        t = time.perf_counter()
        frame, x = read_matrix(features)
        y = PCA(n_components=variance).fit_transform(x).astype(np.float32)
        with tempfile.TemporaryDirectory(dir=VAR) as tmp:
            frame[["path", "label"]].assign(pca=list(y)).to_parquet(Path(tmp) / "pca.parquet")
        runs["script"].append(time.perf_counter() - t)
    return {"shape": list(x.shape), "dtype": str(x.dtype), "k": k, "solver": solver,
            "runs_s": runs, "loadavg_before": os.getloadavg()[0]}  # fmt: skip


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


# --- report ------------------------------------------------------------------------------


def machine() -> dict:
    versions = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "java": java.splitlines()[0] if java else None,
        "versions": versions,
        "loadavg_start": os.getloadavg(),
    }


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def label(row: dict) -> str:
    return f"{row['model']}@{row['size']} {row['variant']}"


def phases(job: dict) -> str:
    """The driver's timed steps, in order: 'name at start_s +duration_s'."""
    steps = sorted(job.get("driver_phases") or [], key=lambda p: p["at_s"])
    text = ", ".join(f"{p['phase']} @{p['at_s']:.1f} +{p['s']:.1f}" for p in steps)
    return f"driver steps (s from job start): {text or 'none'}; job ends @{job['job_s']:.1f}"


def worker_startup(workers: list[dict]) -> str:
    def each(key: str) -> str:
        return "/".join(f"{w.get(key) or 0:.1f}" for w in workers)

    return (
        f"workers (s): process start @{each('process_start_s')}, TensorFlow import "
        f"+{each('tf_import_s')}, model build +{each('model_build_s')}, first batch "
        f"(incl. trace) +{each('first_batch_s')}"
    )


def table(results: dict) -> str:
    lines = []
    add = lines.append
    m = results["machine"]
    v = m["versions"]
    add(f"machine: {m['cores']} cores; python {v['python']}, pyspark {v['pyspark']}, "
        f"tensorflow {v['tensorflow-cpu']}, keras {v['keras']}, numpy {v['numpy']}, "
        f"scikit-learn {v['scikit-learn']}")  # fmt: skip
    if results.get("featurize"):
        add("")
        add(f"{'featurize':<26}{'images':>7}{'raw img/s':>10}{'job img/s':>10}{'ratio':>6}"
            f"{'steady':>8}{'ratio':>6}{'cpu ms/img raw':>15}{'job':>6}{'ratio':>6}"
            f"{'job s':>7}{'JVM+session s':>14}")  # fmt: skip
        add("  ratio: job img/s (featurize.run, JVM start apart) / raw img/s (its predict loop). "
            "steady: images / (first batch start -> last batch end, any worker). cpu: CPU ms "
            "per image, raw: its loop, job: JVM + driver + workers during run(); ratio "
            "raw/job.")  # fmt: skip
        for r in results["featurize"]:
            j = r["job"]
            add(f"{label(r):<26}{r['images']:>7}{r['raw']['rate']:>10.1f}"
                f"{r['job_rate_end_to_end']:>10.1f}{r['ratio_end_to_end']:>6.2f}"
                f"{r['job_rate_steady'] or 0:>8.1f}{r['ratio_steady'] or 0:>6.2f}"
                f"{r['raw_cpu_ms_per_image']:>15.1f}{r['job_cpu_ms_per_image'] or 0:>6.1f}"
                f"{r['ratio_cpu'] or 0:>6.2f}"
                f"{j['job_s']:>7.1f}{j['jvm_start_s'] + j['session_start_s']:>14.1f}")  # fmt: skip
            add(f"{'':<26}raw Keras end to end (TF import, build, first trace "
                f"{r['raw']['fixed_s']:.1f} s, then the loop): {r['raw']['rate_end_to_end']:.1f} "
                f"img/s; job / that: {r['ratio_end_to_end_both']:.2f}")  # fmt: skip
            add(f"{'':<26}target >= {TARGET_FEATURIZE}: end to end "
                f"{verdict(r['ratio_end_to_end'] >= TARGET_FEATURIZE)}, steady "
                f"{verdict(bool(r['ratio_steady']) and r['ratio_steady'] >= TARGET_FEATURIZE)}"
                f"; parity with raw Keras (rtol {RTOL}, atol {ATOL}): "
                f"{'ok' if r['parity']['allclose'] else 'FAILED'}, with atol x max|feature| "
                f"({r['parity']['feature_scale']:.1e}): "
                f"{'ok' if r['parity']['allclose_at_scale'] else 'FAILED'}, max |diff| "
                f"{r['parity']['max_abs_diff']:.1e}")  # fmt: skip
        add("  where a task's time goes (ms per image, summed over workers; raw Keras alongside):")
        for r in results["featurize"]:
            p = r["job"].get("profile") or {}
            s = p.get("stage_ms_per_image", {})
            rs = r["raw"]["stage_ms_per_image"]
            add(f"  {label(r):<25} job: read {s.get('read_s', 0):.2f} "
                f"stall {s.get('stall_s', 0):.2f} decode {s.get('decode_s', 0):.2f} "
                f"preprocess {s.get('preprocess_s', 0):.2f} predict {s.get('predict_s', 0):.2f} "
                f"yield {s.get('yield_s', 0):.2f} | raw: decode {rs['decode_s']:.2f} "
                f"preprocess {rs['preprocess_s']:.2f} predict {rs['predict_s']:.2f}")  # fmt: skip
            add(f"  {'':<25} job wall: {p.get('before_first_batch_s', 0):.1f} s before the "
                f"first batch, {p.get('busy_s', 0):.1f} s busy, "
                f"{p.get('after_last_batch_s', 0):.1f} s after the last; "
                f"{p.get('workers', 0)} workers, {p.get('tasks', 0)} tasks, "
                f"{p.get('mean_rows_per_batch', 0):.0f} rows/batch, "
                f"{p.get('between_tasks_s', 0):.1f} worker-s between tasks "
                f"(median {p.get('between_tasks_median_s') or 0:.2f} s)")  # fmt: skip
            add(f"  {'':<25} {phases(r['job'])}")
            workers = list((p.get("per_worker") or {}).values())
            if workers and "model_start_s" in workers[0]:
                add(f"  {'':<25} {worker_startup(workers)}")
    sc = results.get("scaling")
    if sc:
        add("")
        f = sc["fit"]
        pts = ", ".join(f"{p['images']}: {p['job_s']:.1f} s" for p in sc["points"])
        add(f"scaling {sc['model']}@{sc['size']} {sc['variant']}: {pts}")
        fl, fw = sc["fit_listing"], sc["fit_without_listing"]
        add(f"  of which the driver's file listing: {fl['fixed_s']:.1f} s + "
            f"{fl['per_image_ms']:.2f} ms x images (R^2 {fl['r2']:.4f}); the rest: "
            f"{fw['fixed_s']:.1f} s + {fw['per_image_ms']:.2f} ms x images (marginal "
            f"{fw['marginal_rate'] or 0:.1f} img/s, R^2 {fw['r2']:.4f})")  # fmt: skip
        add(f"  fit t = {f['fixed_s']:.1f} s + {f['per_image_ms']:.2f} ms x images "
            f"(marginal {f['marginal_rate']:.1f} img/s), R^2 {f['r2']:.5f}, "
            f"max residual {100 * f['max_relative_residual']:.1f}%"
            + (f"; marginal / raw Keras {sc['ratio_marginal']:.2f}" if sc.get("ratio_marginal")
               else ""))  # fmt: skip
    rd = results.get("reduce")
    if rd:
        add("")
        sk = rd["sklearn"]["median_s"]
        startup = [j["jvm_start_s"] + j["session_start_s"] for j in rd["jobs"]]
        each = ", ".join(f"{j['job_s']:.1f}" for j in rd["jobs"])
        add(f"reduce {rd['rows']} x {rd['features']} (medians): job {rd['job_s']:.1f} s "
            f"(runs {each}; JVM+session "
            f"{max(startup):.1f} s more), scikit-learn PCA(0.95) fit+transform {sk['auto']:.2f} s "
            f"(solver {rd['sklearn_solver']}); ratio {rd['ratio']:.1f}x, target <= "
            f"{TARGET_REDUCE}: {verdict(rd['ratio'] <= TARGET_REDUCE)}; k job {rd['k_job']}, "
            f"scikit-learn {rd['k_sklearn']}")  # fmt: skip
        add(f"  scikit-learn's side read Parquet into a matrix in {sk['read']:.2f} s (not in the "
            f"fit+transform above): job / (read + fit+transform) "
            f"{rd['ratio_vs_read_fit_transform']:.1f}x")  # fmt: skip
        add(f"  other references: covariance_eigh {sk['covariance_eigh']:.2f} s "
            f"({rd['ratio_vs_covariance_eigh']:.1f}x), float64 {sk['auto_float64']:.2f} s, "
            f"a script reading Parquet, fitting, projecting, writing Parquet "
            f"{sk['script']:.2f} s ({rd['ratio_vs_script']:.1f}x)")  # fmt: skip
        load = max([r["loadavg_before"] for r in rd["sklearn"]["rounds"]]
                   + [j["loadavg_before"] for j in rd["jobs"]])  # fmt: skip
        if load > m["cores"]:
            add(f"  WARNING: load average up to {load:.1f} on {m['cores']} cores before these "
                "runs: scikit-learn's threaded LAPACK slows down far more than the job "
                "under contention, so the ratios flatter the job; use a quiet machine")  # fmt: skip
        cpu = ", ".join(f"{j['cpu_s']:.1f}" for j in rd["jobs"] if j.get("cpu_s") is not None)
        add(f"  job CPU seconds (JVM + driver + Python workers during run()): {cpu}")
        warm = ", ".join(f"{t:.1f}" for j in rd["jobs"] for t in j["repeat_s"])
        add(f"  the same job again in the same session (JVM and Python workers warm): "
            f"{rd['warm_job_s']:.1f} s (runs {warm}), {rd['ratio_warm']:.1f}x scikit-learn: "
            f"the rest of the first run is start-up")  # fmt: skip
        for j in rd["jobs"]:
            add(f"  {phases(j)}")
            for name, ps in (j.get("profile") or {}).items():
                add(f"    {name} pass, {ps['tasks']} tasks in {ps['workers']} workers (s from job "
                    f"start): worker processes up by @{ps['process_start_s'] or 0:.1f}, function "
                    f"called @{ps['called_s']:.1f}, first Arrow batch "
                    f"@{ps['first_batch_s'] or 0:.1f}, last task ends @{ps['end_s']:.1f}; "
                    f"computing {ps['compute_s']:.1f} worker-s")  # fmt: skip
    if results.get("featurize") or results.get("scaling"):
        add("")
        add(emr_estimate.table(results, emr_estimate.FULL_FRUITS_360, [2, 4, 8]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    started = time.time()
    if not args.no_featurize:
        results["featurize"] = [
            row
            for model in args.models.split(",")
            for size in args.sizes.split(",")
            for row in bench_featurize(model, int(size), args)
        ]
    if args.scaling:
        sc = results["scaling"] = bench_scaling(args)
        raw = [r["raw"]["rate"] for r in results.get("featurize", [])
               if (r["model"], r["size"]) == (sc["model"], sc["size"])]  # fmt: skip
        if raw:
            sc["ratio_marginal"] = sc["fit"]["marginal_rate"] / raw[0]
    if not args.no_reduce:
        results["reduce"] = bench_reduce(args)
    results["wall_s"] = time.time() - started
    results["table"] = table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str))
    print(results["table"])
    print(f"\nwrote {args.json} ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
