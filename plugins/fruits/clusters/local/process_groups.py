"""The local cluster's processes: started each in a process group of its own, recorded
by pid *and* start time, and ended by group -- exactly what was started, and nothing
left a zombie.

A recorded process is ``{"pid", "create_time", "log"}`` (:func:`spawn`); the cluster
keeps these in its ``cluster.json`` so that a later task, or a later run, ends them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fruits.clusters.common.step_runner import DAEMON_GRACE, start_session

log = logging.getLogger(__name__)

KILL_WAIT = 30.0  # seconds for the kernel to end a SIGKILLed group (long on a loaded host)


def create_time(pid: int) -> float | None:
    """When the process started, or None if there is no such (living) process."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return None
        return proc.create_time()
    except psutil.Error:
        return None


def spawn(argv: list[str], log_path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Start ``argv`` in a process group of its own (it outlives the task; one killpg
    ends it and its children); returns its record."""
    proc = start_session(argv, log_path, dict(env))
    return {"pid": proc.pid, "create_time": create_time(proc.pid), "log": str(log_path)}


def alive(proc: Mapping[str, Any] | None) -> bool:
    """The recorded process still runs and is the one we started (pids get reused)."""
    if not proc or not proc.get("pid"):
        return False
    created = create_time(int(proc["pid"]))
    if created is None:
        return False
    expected = proc.get("create_time")
    return expected is None or abs(created - float(expected)) < 1.0


def end_group(name: str, proc: Mapping[str, Any] | None, grace: float = DAEMON_GRACE) -> str:
    """SIGTERM the recorded process group, SIGKILL it after ``grace`` seconds; either way
    wait (with a deadline) until the group is gone and its leader collected: a signal is
    delivered some time after ``killpg`` returns, and a leader that dies after our last
    look would stay a zombie. Returns ``not running``, ``stopped`` or ``killed``."""
    if not _ours(proc):
        return "not running"
    pid = int(proc["pid"])
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "not running"
    if _wait_group(pid, grace):
        return "stopped"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if not _wait_group(pid, KILL_WAIT):
        log.error("%s (process group %s) still there %ss after SIGKILL", name, pid, KILL_WAIT)
    log.warning("%s (process group %s) ignored SIGTERM for %ss: killed", name, pid, grace)
    return "killed"


def _group_exists(pgid: int) -> bool:
    """Some process of the group still runs (zombies, waiting for a parent, do not count)."""
    import psutil

    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def _ours(proc: Mapping[str, Any] | None) -> bool:
    """Our process group still has members: its leader is the process we started, or the
    leader is gone but the group lives on (Linux does not reuse a pid that still names a
    process group, so those members are ours)."""
    if not proc or not proc.get("pid"):
        return False
    pid = int(proc["pid"])
    if alive(proc):
        return True
    return create_time(pid) is None and _group_exists(pid)


def _wait_group(pgid: int, timeout: float) -> bool:
    """True once the group's leader is collected (or not ours to collect) and no member
    of the group runs; False if that is not so within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if _reap(pgid) and not _group_exists(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _reap(pid: int) -> bool:
    """Collect the exit status if the process is our child (dags test runs tasks
    in-process). True when no living process has that pid any more: collected now or
    before, or a zombie whose parent is another process (theirs to collect)."""
    import psutil

    try:
        collected, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child, or already collected
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return True
    return collected == pid
