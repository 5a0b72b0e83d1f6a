"""Spark standalone, as both the ``local`` cluster and the ``ec2`` nodes run it: the
daemons' classes, how a worker says it joined, and the master's status page.

Standard library only: it ships to the ``ec2`` nodes beside the node program."""

from __future__ import annotations

import json
import urllib.request
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
