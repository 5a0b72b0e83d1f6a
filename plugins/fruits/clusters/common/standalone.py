"""Spark standalone, as both the ``local`` cluster and the ``ec2`` nodes run it: the
daemons' classes, how a worker says it joined, and the master's status page.

Standard library only: it ships to the ``ec2`` nodes beside the node program."""

from __future__ import annotations

import json
import os
import secrets
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
REGISTERED = "Successfully registered with master"  # in the worker's log
MASTER_PORT = 7077  # the standalone master's default port (``spark://host:7077``)
STATUS_TIMEOUT = 3.0  # seconds for one look at the master's status page


def master_status(
    host: str, ui_port: int, timeout: float = STATUS_TIMEOUT
) -> dict[str, Any] | None:
    """The master's ``/json/`` status (``aliveworkers``...), or None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{host}:{ui_port}/json/", timeout=timeout) as r:
            return json.load(r)
    except (OSError, ValueError):
        return None


def alive_workers(host: str, ui_port: int) -> int | None:
    """How many workers the master counts alive; None while it does not answer."""
    status = master_status(host, ui_port)
    return None if status is None else int(status.get("aliveworkers", 0))


def quorum(workers: int) -> int:
    """How many of ``workers`` must have joined before a cluster counts as ready: half,
    rounded up, at least one. One lost spot worker of two (or of three) still leaves a
    quorum: Spark re-runs the lost tasks on the others; the run is slower, not failed."""
    if workers < 1:
        raise ValueError(f"a cluster needs at least one worker, not {workers}")
    return max(1, -(-workers // 2))


def declare_ready(alive: int, workers: int, quorum_for: float, grace: float) -> bool:
    """Whether the primary declares the cluster ready: every worker joined, or a
    :func:`quorum` has been alive for ``grace`` seconds (``quorum_for``; the stragglers
    had their chance: a spot worker that was never granted does not hold up the run)."""
    if alive >= workers:
        return True
    return alive >= quorum(workers) and quorum_for >= grace


# --- the cluster's own Spark configuration: spark.authenticate, sizes, scratch ----------

CONF_FILE = "spark-defaults.conf"  # in SPARK_CONF_DIR: daemons and spark-submit read it


def new_secret() -> str:
    """A secret for ``spark.authenticate``, made per cluster: 256 random bits."""
    return secrets.token_hex(32)


def auth_conf(secret: str) -> dict[str, str]:
    """What the master, the workers and every driver need to trust each other (in a
    standalone cluster the executors get the secret from their worker)."""
    return {"spark.authenticate": "true", "spark.authenticate.secret": secret}


def write_conf(path: Path, conf: Mapping[str, str]) -> None:
    """Write a ``spark-defaults.conf``, readable by its owner only (it holds the
    secret), replacing any earlier one whole."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{key} {value}\n" for key, value in conf.items())
    os.replace(tmp, path)


def read_conf(path: Path) -> dict[str, str]:
    """A ``spark-defaults.conf`` as a dict (comments and blank lines skipped)."""
    conf = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf[key] = value.strip()
    return conf


def worker_shapes(status: Mapping[str, Any]) -> list[tuple[int, int]]:
    """``(cores, memory MiB)`` that each alive worker offers, from :func:`master_status`."""
    return [
        (int(w["cores"]), int(w["memory"]))
        for w in status.get("workers", [])
        if w.get("state") == "ALIVE"
    ]
