"""The local cluster's processes: started each in a process group of its own, recorded
by pid *and* start time, and ended by group -- exactly what was started, and nothing
left a zombie.

A recorded process is ``{"pid", "create_time", "log"}`` (:func:`spawn`); the cluster
keeps these in its ``cluster.json`` so that a later task, or a later run, ends them.
"""

from __future__ import annotations

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
    """:func:`end_groups` of one group: ``not running``, ``stopped`` or ``killed``."""
    return end_groups({name: proc}, grace)[name]


def end_groups(
    procs: Mapping[str, Mapping[str, Any] | None], grace: float = DAEMON_GRACE
) -> dict[str, str]:
    """SIGTERM every recorded process group at once, SIGKILL those still there ``grace``
    seconds later; either way wait (with a deadline) until every group is gone and its
    leader collected: a signal is delivered some time after ``killpg`` returns, and a
    leader that dies after our last look would stay a zombie. The groups shut down side
    by side, so a teardown waits for the slowest, not for the sum of them. Returns each
    name's ``not running``, ``stopped`` or ``killed``."""
    ended = dict.fromkeys(procs, "not running")
    signalled = {}
    for name, proc in procs.items():
        if proc is not None and _ours(proc) and _signal(int(proc["pid"]), signal.SIGTERM):
            signalled[name] = int(proc["pid"])
    stubborn = _wait_groups(signalled, grace)
    ended.update(dict.fromkeys(set(signalled) - set(stubborn), "stopped"))
    for name, pgid in stubborn.items():
        _signal(pgid, signal.SIGKILL)
        log.warning("%s (process group %s) ignored SIGTERM for %ss: killed", name, pgid, grace)
        ended[name] = "killed"
    for name, pgid in _wait_groups(stubborn, KILL_WAIT).items():
        log.error("%s (process group %s) still there %ss after SIGKILL", name, pgid, KILL_WAIT)
    return ended


def _signal(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the group; False if it has no process left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _group_exists(pgid: int) -> bool:
    """Some process of the group still runs (zombies, waiting for a parent, do not count)."""
    return bool(_live_groups({pgid}))


def _live_groups(pgids: set[int]) -> set[int]:
    """Which of ``pgids`` still have a running member (zombies, waiting for a parent, do
    not count): one look at the process table for all of them."""
    import psutil

    candidates = set()
    for pgid in pgids:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            continue
        candidates.add(pgid)
    if not candidates:
        return set()
    live = set()
    for proc in psutil.process_iter(["status"]):
        try:
            pgid = os.getpgid(proc.pid)
            if pgid in candidates and proc.info["status"] != psutil.STATUS_ZOMBIE:
                live.add(pgid)
        except (ProcessLookupError, psutil.Error):
            continue
    return live


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


def _wait_groups(groups: Mapping[str, int], timeout: float) -> dict[str, int]:
    """Wait until every group's leader is collected (or not ours to collect) and no member
    of it runs; returns the groups for which that is not so within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    left = dict(groups)
    while left:
        collected = {name for name, pgid in left.items() if _reap(pgid)}
        live = _live_groups({left[name] for name in collected})
        left = {name: pgid for name, pgid in left.items() if name not in collected or pgid in live}
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return left


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
