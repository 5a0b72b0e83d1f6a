"""Running the bench's processes: a job in its own ``spark-submit`` (timed by
``bench/spark_driver.py`` inside and by the clock outside), any command with the Spark
environment the cluster and the tests use."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.data import ROOT, VAR
from bench.worker_profiles import featurize_profile, reduce_profile
from fruits.clusters.local.sparkenv import spark_env

MODEL_CACHE = VAR / "model-cache"  # the bench's converted models, not the user's cache
PROFILE_ENV = {"featurize": "FRUITS_INFERENCE_PROFILE", "reduce": "FRUITS_REDUCE_PROFILE"}
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def job_env(extra: list[str]) -> dict[str, str]:
    """The Spark environment of the cluster and the tests, with the jobs importable
    (the bench imports its own probes from the repository) and ``--env K=V`` on top."""
    paths = [str(ROOT / "spark_jobs"), str(ROOT / "plugins"), str(ROOT)]
    given = dict(item.partition("=")[::2] for item in extra)  # seen by spark_env itself
    return spark_env(
        {"PYTHONPATH": os.pathsep.join(paths), "FRUITS_MODEL_CACHE": str(MODEL_CACHE), **given}
    )


def run_checked(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-5000:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
    return done


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
        summarize = featurize_profile if job == "featurize" else reduce_profile
        d["profile"] = summarize(profile, d["run_start"], d["run_end"])
    return d
