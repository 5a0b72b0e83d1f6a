"""Runs inside ``spark-submit``: start the session, then time one job's ``run`` on it.

    spark-submit [options] bench/spark_driver.py OUT.json featurize|reduce [job arguments]

The clock starts once the session is up, so JVM and SparkContext start-up are measured
apart (``bench.run`` times the whole ``spark-submit`` too). Everything the job itself
does is inside the timed call: listing, weights, the driver's model check, Python
worker start-up, TensorFlow import and model build in every worker, inference, writes.

With ``BENCH_REPEAT=N`` in the environment the job runs N times on the same session; the
first run is the one reported as the job's time, the others (``repeat_s``) show what the
same work costs once the JVM and the Python workers are warm.
"""

from __future__ import annotations

import time

PYTHON_START = time.time()

import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

PHASES: list[dict] = []  # the driver's own steps, timed by wrapping the job's functions


def timed(name: str, fn):
    """``fn``, recording each call in PHASES; a function already wrapped stays as it is
    (the job may run again on the session, ``BENCH_REPEAT``)."""
    if getattr(fn, "timed_phase", None):
        return fn

    def wrapper(*args, **kwargs):
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            PHASES.append({"phase": name, "start": start, "s": time.time() - start})

    wrapper.timed_phase = name
    return wrapper


def run_featurize(spark, argv: list[str]) -> dict:
    import featurize

    from fruits_spark.inference import driver_model, models, runtimes

    featurize.list_images = timed("list_images", featurize.list_images)
    for name in ("prepare", "resolve_weights", "build_checked"):
        setattr(driver_model, name, timed(name, getattr(driver_model, name)))
    models.configure_threads = timed(
        "configure_threads (imports TensorFlow)", models.configure_threads
    )
    runtimes.to_litert = timed("to_litert (conversion)", runtimes.to_litert)
    args = featurize.parse_args(argv)
    summary = featurize.run(spark, args)
    return dataclasses.asdict(summary)


REDUCE_TIMED = {
    "reduce": ("read_features", "project_in_driver", "project_in_spark", "scatter_points",
               "label_counts", "write_report"),
    "fruits_spark.pca.passes": ("summarize", "project"),
    # fit_from_covariance as fit_summary looks it up: in feature_summary's namespace
    "fruits_spark.pca.summary": ("fit_summary", "fit_from_covariance"),
    "fruits_spark.pca.report": ("build_report", "cumulative_variance_png", "pca_scatter_png"),
}  # fmt: skip


def run_reduce(spark, argv: list[str]) -> dict:
    import importlib

    import reduce

    for module_name, names in REDUCE_TIMED.items():
        module = importlib.import_module(module_name)
        for name in names:
            setattr(module, name, timed(name, getattr(module, name)))

    args = reduce.parse_args(argv)
    report = reduce.reduce_features(spark, args)
    return {k: report[k] for k in ("n_rows", "n_features", "k")}


JOBS = {"featurize": run_featurize, "reduce": run_reduce}


def tree_cpu_s(root: int) -> float | None:
    """User + system CPU seconds of ``root`` and every live descendant (Linux /proc):
    the JVM, this driver, the PySpark daemon and its Python workers."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                        todo += [int(c) for c in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited meanwhile
        return total
    except OSError:
        return None


def main(argv: list[str]) -> int:
    out, job, *job_argv = argv
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(f"bench-{job}").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    session_ready = time.time()
    jvm = os.getppid()  # spark-submit's JVM started this driver
    repeat_s = []
    try:
        cpu_start = tree_cpu_s(jvm)
        run_start = time.time()
        result = JOBS[job](spark, job_argv)
        run_end = time.time()
        cpu_end = tree_cpu_s(jvm)
        first_phases = len(PHASES)
        for _ in range(int(os.environ.get("BENCH_REPEAT", "1")) - 1):
            start = time.time()
            JOBS[job](spark, job_argv)
            repeat_s.append(time.time() - start)
        del PHASES[first_phases:]  # the phases reported are the first run's
        conf = dict(spark.sparkContext.getConf().getAll())
    finally:
        spark.stop()
    with open(out, "w", encoding="utf-8") as f:
        json.dump(
            {
                "job": job,
                "argv": job_argv,
                "python_start": PYTHON_START,
                "session_ready": session_ready,
                "run_start": run_start,
                "run_end": run_end,
                "result": result,
                "cpu_s": None if cpu_start is None or cpu_end is None else cpu_end - cpu_start,
                "repeat_s": repeat_s,
                "driver_phases": [
                    {"phase": p["phase"], "at_s": p["start"] - run_start, "s": p["s"]}
                    for p in PHASES
                ],
                "spark_conf": {
                    k: v
                    for k, v in conf.items()
                    if k.startswith(
                        ("spark.master", "spark.driver.memory", "spark.sql", "spark.python")
                    )
                },
            },
            f,
            indent=1,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
