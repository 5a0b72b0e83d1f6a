"""The DAG run as ``scripts/demo.sh`` does it: moto's S3 server on loopback, Airflow on
SQLite, ``airflow dags test fruits_pipeline <date>`` with ``scripts/lib.sh``'s
environment, the local Spark backend.

The bench runs the same command a user runs, in a subprocess, so that what it measures
is what ``make demo`` costs: the task processes, the cluster the DAG starts, the steps.
Its environment is built here rather than by sourcing lib.sh (the bench needs its own
AIRFLOW_HOME, scratch, bucket and incoming folder), and the pipeline's settings come
from the bench's options alone: ``FRUITS_*`` variables of the caller's shell are dropped,
so two runs of the bench compare.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's: airflow, moto_server
DAG_ID = "fruits_pipeline"
MOTO_KEY, MOTO_SECRET, REGION = "moto-local-key", "moto-local-secret", "us-east-1"
# FRUITS_* variables kept from the caller: where caches live, not what the run computes
KEPT_FRUITS = ("FRUITS_MODEL_CACHE", "FRUITS_JVM_ARCHIVE")
AWS_DROPPED = ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class RunConfig:
    """What the bench sets for every run: the pipeline's settings and its folders."""

    work: Path  # the bench's folder: airflow/, scratch/, data/incoming/, logs/
    bucket: str
    image_size: int
    model: str
    weights: str
    poke_interval: int = 2

    @property
    def airflow_home(self) -> Path:
        return self.work / "airflow"

    @property
    def incoming(self) -> Path:
        return self.work / "data" / "incoming"

    @property
    def database(self) -> Path:
        return self.airflow_home / "airflow.db"

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    @property
    def scratch(self) -> Path:
        return self.work / "scratch"


def aws_connection(endpoint: str) -> str:
    """``AIRFLOW_CONN_AWS_DEFAULT`` for moto's server, as lib.sh's ``start_moto`` sets it."""
    return json.dumps({
        "conn_type": "aws", "login": MOTO_KEY, "password": MOTO_SECRET,
        "extra": {"endpoint_url": endpoint, "region_name": REGION},
    })  # fmt: skip


def pipeline_env(base: Mapping[str, str], config: RunConfig, endpoint: str) -> dict[str, str]:
    """lib.sh's environment (loopback Spark, SQLite with its lock wait, the local backend,
    no real AWS account) with the bench's folders and settings."""
    env = {
        k: v
        for k, v in base.items()
        if not (k.startswith("FRUITS_") and k not in KEPT_FRUITS) and k not in AWS_DROPPED
    }
    path = [str(BIN), *filter(None, [base.get("PATH")])]
    pythonpath = [str(ROOT / "plugins"), str(ROOT / "spark_jobs")]
    env.update({
        "PATH": os.pathsep.join(path),
        "PYTHONPATH": os.pathsep.join([*pythonpath, *filter(None, [base.get("PYTHONPATH")])]),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "AIRFLOW_HOME": str(config.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{config.database}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "fruits.dev.sqlite_db.CONNECT_ARGS",
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
        "FRUITS_COMPUTE": "local",
        "FRUITS_INCOMING": str(config.incoming),
        "FRUITS_MODEL": config.model,
        "FRUITS_WEIGHTS": config.weights,
        "FRUITS_IMAGE_SIZE": str(config.image_size),
        "FRUITS_BUCKET": config.bucket,
        "FRUITS_SCRATCH": str(config.scratch),
        "FRUITS_POKE_INTERVAL": str(config.poke_interval),
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AIRFLOW_CONN_AWS_DEFAULT": aws_connection(endpoint),
    })  # fmt: skip
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_url(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers: up
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"nothing answered on {url}")


class Moto:
    """moto's server on 127.0.0.1 (a free port), started by the bench, stopped by its pid."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""

    def start(self) -> Moto:
        port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.endpoint = f"http://127.0.0.1:{port}"
        try:
            wait_for_url(f"{self.endpoint}/moto-api/")
        except RuntimeError:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)


def fresh_airflow(config: RunConfig, env: Mapping[str, str]) -> None:
    """A new AIRFLOW_HOME (the bench's own: no run of an earlier bench in the way), and
    ``airflow db migrate`` once."""
    shutil.rmtree(config.airflow_home, ignore_errors=True)
    config.airflow_home.mkdir(parents=True)
    config.logs.mkdir(parents=True, exist_ok=True)
    log = config.logs / "db-migrate.log"
    with log.open("wb") as out:
        done = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=dict(env),
                              stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"airflow db migrate failed: {tail(log)}")


@dataclass(frozen=True)
class DagsTest:
    returncode: int
    wall_seconds: float
    log: Path


def dags_test(
    env: Mapping[str, str], date: str, log: Path, watch: Callable[[int], Callable[[], object]]
) -> DagsTest:
    """``airflow dags test fruits_pipeline <date>``, its output to ``log``; ``watch(pid)``
    is called once it started and returns what to call once it ended (the sampler)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BIN / "airflow"), "dags", "test", DAG_ID, date],
                                env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=ROOT)  # fmt: skip
        done = watch(proc.pid)
        try:
            returncode = proc.wait()
        except BaseException:  # interrupted or terminated: take the run down with the bench
            stop_child(proc)
            raise
        finally:
            done()
    return DagsTest(returncode, round(time.perf_counter() - started, 1), log)


def stop_child(proc: subprocess.Popen, grace: float = 60.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds. The cluster a killed run leaves (its
    processes live in sessions of their own) is stopped by the next run's
    ``clear_leftovers``, or ``python -m fruits.clusters.local.cluster stop-all <scratch>``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


class BenchBusy(RuntimeError):
    """Another bench holds the work folder."""


def lock_work(work: Path) -> TextIO:
    """Hold ``<work>/.bench.lock`` (flock) for as long as the returned file stays open:
    two benches in one folder would wipe each other's Airflow home and batches."""
    import fcntl

    work.mkdir(parents=True, exist_ok=True)
    handle = (work / ".bench.lock").open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise BenchBusy(
            f"another python -m bench.scale is using {work}: wait for it, or pass --work-dir"
        ) from None
    return handle


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"
