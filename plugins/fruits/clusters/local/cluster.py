"""The ``local`` backend's cluster: a Spark standalone master and worker on the Airflow
worker, on loopback, with EMR's life cycle so the DAG keeps one shape.

- ``create_job_flow`` -> :func:`start_cluster`: a master and a worker
  (``spark-class org.apache.spark.deploy.{master.Master,worker.Worker}``) on
  127.0.0.1 with free ports, each in a process group of its own
  (:mod:`fruits.clusters.local.process_groups`); their pids and start times go to
  ``<scratch>/clusters/<id>/cluster.json``. Returns the cluster id.
- ``add_steps`` and ``wait_for_step``: :mod:`fruits.clusters.local.steps` (one runner process
  runs the steps in order, as EMR's step queue does; the outputs go to the run's
  staging prefix in S3).
- ``remove_cluster`` -> :func:`stop_cluster`: ends exactly the recorded process
  groups (runner, worker and its executors, master) and deletes the staged data;
  logs stay (``logs/``, ``steps/<id>/``, executors' in ``work/``).

The cluster lives on the host that ran ``create_job_flow``: with several Airflow
workers, route this DAG's tasks to one of them (a queue), or use ``emr``.

A run killed with its Airflow process (``airflow dags test`` killed, a worker lost)
leaves its cluster running, since the cluster is meant to outlive the tasks. The next
run reaps it (:func:`reap_abandoned`, from ``clear_leftovers``, once that run holds the
cluster slot): every cluster not TERMINATED whose owner -- the process that started it
-- is gone. By hand, e.g. when Airflow itself was stopped mid-run:

    python -m fruits.clusters.local.cluster stop-all <scratch>      # every cluster still running
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fruits.clusters.common.standalone import (
    MASTER_CLASS,
    WORKER_CLASS,
    alive_workers,
    auth_conf,
    new_secret,
    write_conf,
)
from fruits.clusters.common.step_runner import CONF_DIR, file_tail
from fruits.clusters.local.process_groups import alive, create_time, end_groups, spawn
from fruits.clusters.local.spark_install import free_port, spark_bin
from fruits.clusters.local.sparkenv import spark_env

log = logging.getLogger(__name__)

START_TIMEOUT = 180  # seconds for the master to come up and the worker to register
PROPERTIES_FILE = "spark.properties"  # in <cluster>/conf/: the secret (see cluster_conf)


class ClusterError(RuntimeError):
    """The local cluster could not start, or is gone."""


def cluster_dir(scratch: Path, cluster_id: str) -> Path:
    """The cluster's folder; ClusterError for an id that could lead out of ``scratch``."""
    if not re.fullmatch(r"local-[0-9A-Za-z-]+", cluster_id or ""):
        raise ClusterError(f"not a local cluster id: {cluster_id!r}")
    return scratch / "clusters" / cluster_id


def read_cluster(scratch: Path, cluster_id: str) -> dict[str, Any]:
    path = cluster_dir(scratch, cluster_id) / "cluster.json"
    if not path.exists():
        raise ClusterError(f"cluster {cluster_id}: no {path}")
    return json.loads(path.read_text())


def write_cluster(folder: Path, info: Mapping[str, Any]) -> None:
    """Replace ``cluster.json`` whole: a reader never sees half of it."""
    tmp = folder / "cluster.json.tmp"
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, folder / "cluster.json")


def start_cluster(
    scratch: Path,
    *,
    cores: int,
    memory: str,
    name: str = "fruits",
    timeout: float = START_TIMEOUT,
    labels: Mapping[str, str] | None = None,
    workers: int = 1,
) -> str:
    """Start a master and ``workers`` workers (``cores`` and ``memory`` each) on
    127.0.0.1; return the cluster id once every worker has registered. On any failure,
    what was started is stopped again. More than one worker is for the tests that lose
    one mid-job (the first is ``worker``, the others ``worker-2``...).

    The calling process is recorded as the cluster's owner (see :func:`reap_abandoned`);
    ``labels`` (run id, batch) are recorded too, to say whose a leftover cluster was."""
    cluster_id = f"local-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
    folder = cluster_dir(scratch, cluster_id)
    folder.mkdir(parents=True)
    roles = worker_roles(workers)
    ports = {k: free_port() for k in ("master", "master_ui", "worker", "worker_ui")}
    info: dict[str, Any] = {
        "id": cluster_id,
        "name": name,
        "dir": str(folder),
        "master_url": f"spark://127.0.0.1:{ports['master']}",
        "ui_url": f"http://127.0.0.1:{ports['master_ui']}",
        "ports": ports,
        "cores": cores,
        "memory": memory,
        "processes": {},
        "owner": {"pid": os.getpid(), "create_time": create_time(os.getpid())},
        "labels": dict(labels or {}),
        "state": "STARTING",
    }
    properties = cluster_conf(folder)
    info["properties_file"] = str(properties)  # a driver of this cluster needs it (the secret)
    env = spark_env({"SPARK_LOCAL_DIRS": str(folder / "local")})
    spark_class = spark_bin("spark-class")
    try:
        info["processes"]["master"] = spawn(
            [spark_class, MASTER_CLASS, "--properties-file", str(properties), "--host", "127.0.0.1",
             "--port", str(ports["master"]), "--webui-port", str(ports["master_ui"])],
            folder / "logs" / "master.log",
            env,
        )  # fmt: skip
        write_cluster(folder, info)
        for role in roles:  # the first keeps the names it always had (work/, worker.log)
            own = "" if role == "worker" else role.removeprefix("worker")
            info["processes"][role] = spawn(
                [spark_class, WORKER_CLASS, info["master_url"],
                 "--properties-file", str(properties), "--host", "127.0.0.1",
                 "--cores", str(cores), "--memory", memory,
                 "--port", str(ports["worker"]) if not own else "0",  # 0: any free port
                 "--webui-port", str(ports["worker_ui"]) if not own else "0",
                 "--work-dir", str(folder / f"work{own}")],
                folder / "logs" / f"{role}.log",
                env,
            )  # fmt: skip
            write_cluster(folder, info)
        deadline = time.monotonic() + timeout
        while True:
            if (alive_workers("127.0.0.1", ports["master_ui"]) or 0) >= workers:
                break
            for role in ("master", *roles):
                if not alive(info["processes"][role]):
                    raise ClusterError(
                        f"the Spark {role} exited while starting:\n"
                        + file_tail(Path(info["processes"][role]["log"]), 30)
                    )
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"not all {workers} worker(s) registered with {info['master_url']} "
                    f"within {timeout:.0f}s:\n" + file_tail(folder / "logs" / "worker.log", 30)
                )
            time.sleep(0.5)
    except BaseException:
        end_groups({role: info["processes"].get(role) for role in (*roles, "master")}, grace=5)
        info["state"] = "TERMINATED_WITH_ERRORS"
        write_cluster(folder, info)
        raise
    info["state"] = "WAITING"
    write_cluster(folder, info)
    log.info("local cluster %s: master %s, UI %s", cluster_id, info["master_url"], info["ui_url"])
    return cluster_id


def cluster_conf(folder: Path) -> Path:
    """The cluster's own Spark properties, ``<folder>/conf/spark.properties`` (the owner
    alone reads it): ``spark.authenticate`` with a secret made for this cluster (never on
    a command line, where any local user sees it), and Spark's scratch in the cluster's
    folder. The daemons and every step's ``spark-submit`` are handed it with
    ``--properties-file``; the executors get the secret from their worker.

    Not through ``SPARK_CONF_DIR``: Spark's launcher puts that folder first on every
    JVM's class path (daemons, drivers, executors), and Java maps the class archive
    (:mod:`.jvm_archive`) only into a JVM whose class path is the archive's own, which
    this cluster's folder never is: each JVM would load Spark's classes from the jars."""
    conf_dir, scratch = folder / CONF_DIR, folder / "local"
    conf_dir.mkdir(mode=0o700, exist_ok=True)
    scratch.mkdir(exist_ok=True)
    path = conf_dir / PROPERTIES_FILE
    write_conf(path, {**auth_conf(new_secret()), "spark.local.dir": str(scratch)})
    return path


def worker_roles(workers: int) -> list[str]:
    """The workers' names in ``cluster.json``: ``worker``, then ``worker-2``..."""
    if workers < 1:
        raise ClusterError(f"a cluster needs at least one worker, not {workers}")
    return ["worker", *(f"worker-{n}" for n in range(2, workers + 1))]


def stop_cluster(scratch: Path, cluster_id: str) -> dict[str, str]:
    """End the runner, the worker (and its executors) and the master; delete staged data.
    Their groups get SIGTERM together and shut down side by side (SIGKILL for any still
    there after the grace), and it returns once none is left. Safe to call again: what is
    not running is left alone."""
    info = read_cluster(scratch, cluster_id)
    folder = Path(info["dir"])
    processes = info["processes"]
    roles = ("steps", "worker", *sorted(r for r in processes if r.startswith("worker-")), "master")
    ended = end_groups({role: processes.get(role) for role in roles})
    shutil.rmtree(folder / "s3", ignore_errors=True)  # staged inputs, outputs (now in S3)
    shutil.rmtree(folder / "local", ignore_errors=True)  # Spark's scratch
    (folder / CONF_DIR / PROPERTIES_FILE).unlink(missing_ok=True)  # the secret dies with it
    info["state"] = "TERMINATED"
    write_cluster(folder, info)
    log.info("local cluster %s terminated: %s (logs kept in %s)", cluster_id, ended, folder)
    return ended


def reap_abandoned(scratch: Path) -> dict[str, dict[str, str]]:
    """Stop every cluster not TERMINATED whose owner process is gone: left by a run
    killed before its teardown. Call it only where no live run can still be using such
    a cluster (the DAG does, holding the cluster slot): in a scheduler's world the owner
    (the create_job_flow task's process) ends right after starting the cluster."""
    reaped = {}
    for path in sorted(scratch.glob("clusters/local-*/cluster.json")):
        info = json.loads(path.read_text())
        if info.get("state") == "TERMINATED" or alive(info.get("owner")):
            continue
        log.warning(
            "local cluster %s (%s) outlived its run: stopping it", info["id"], info.get("labels")
        )
        reaped[info["id"]] = stop_cluster(scratch, info["id"])
    return reaped


def stop_all(scratch: Path) -> dict[str, dict[str, str]]:
    """Stop every cluster recorded under ``scratch`` that is not TERMINATED yet."""
    stopped = {}
    for path in sorted(scratch.glob("clusters/local-*/cluster.json")):
        cluster_id = path.parent.name
        if json.loads(path.read_text()).get("state") != "TERMINATED":
            stopped[cluster_id] = stop_cluster(scratch, cluster_id)
    return stopped


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Manage the local backend's Spark clusters.")
    sub = p.add_subparsers(dest="command", required=True)
    stop = sub.add_parser("stop-all", help="stop every cluster still running under SCRATCH")
    stop.add_argument("scratch", type=Path, help="FRUITS_SCRATCH (e.g. var/scratch)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stopped = stop_all(args.scratch)
    for cluster_id, ended in stopped.items():
        print(f"{cluster_id}: {ended}")
    if not stopped:
        print(f"no running local cluster under {args.scratch}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
