"""``node.py run-steps``: the primary runs the cluster's steps with ``step_runner`` (the
local backend's runner, each step in a session of its own) and mirrors every state
change, and a running step's output, to ``LOG/steps/<id>/``, where the
``wait_for_step`` sensor reads them. Standard library and boto3 only: it runs on the
node, with ``step_runner.py`` and ``node_report.py`` from the same folder."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import step_runner
from node_report import LogPrefix, say


class Interrupted(BaseException):
    """SIGTERM or SIGINT: not an Exception, so nothing on the way swallows it."""


def _on_signal(signum: int, _frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: clean up in peace
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(
        f"run-steps got {signal.Signals(signum).name} (stopped by hand or the "
        "instance is shutting down)"
    )


class Mirror:
    """Copies a step's local files to ``LOG/steps/<id>/``; never lets an S3 error stop
    the steps (the next change, or the final mirror, copies again)."""

    def __init__(self, log: LogPrefix):
        self.log = log

    def _copy(self, sid: str, folder: Path, names: tuple[str, ...]) -> None:
        for name in names:
            path = folder / name
            if not path.exists():
                continue
            kind = "application/json" if name.endswith(".json") else "text/plain"
            try:
                self.log.put(f"steps/{sid}/{name}", path.read_bytes(), kind)
            except Exception as exc:  # S3 unreachable for a while
                say(f"could not copy {path} to {self.log.uri}steps/{sid}/{name}: {exc}")

    def changed(self, sid: str, folder: Path) -> None:
        state = json.loads((folder / "state.json").read_text())
        say(
            f"step {sid}: {state['state']}" + (f" ({state['reason']})" if "reason" in state else "")
        )
        if state["state"] in step_runner.TERMINAL:  # output first: who sees FAILED finds stderr
            self._copy(sid, folder, ("stdout", "stderr"))
        self._copy(sid, folder, ("state.json",))

    def progress(self, sid: str, folder: Path) -> None:
        self._copy(sid, folder, ("stdout", "stderr"))

    def everything(self, sid: str, folder: Path) -> None:
        self._copy(sid, folder, ("stdout", "stderr", "state.json"))


def _checked_steps(steps: Any) -> list[dict[str, Any]]:
    ok = isinstance(steps, list) and all(
        isinstance(s, dict)
        and isinstance(s.get("id"), str)
        and re.fullmatch(r"[0-9A-Za-z][\w.-]*", s["id"])
        and isinstance(s.get("argv"), list)
        and s["argv"]
        and all(isinstance(a, str) for a in s["argv"])
        for s in steps
    )
    if not ok or len({s["id"] for s in steps}) != len(steps):
        raise ValueError('steps.json is not [{"id": "...", "name": "...", "argv": [...]}, ...]')
    return steps


def cmd_run_steps(args: argparse.Namespace) -> int:
    """Run ``LOG/steps.json`` in order (one runner per work dir); 0 if every step
    completed. On SIGTERM the running step is ended and marked INTERRUPTED, the steps
    not started CANCELLED, all mirrored; 1."""
    log = LogPrefix(args.log_prefix)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    lock = (work / ".lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say(f"another run-steps is running in {work}: not starting a second one")
        return 1
    try:
        steps = _checked_steps(log.get_json("steps.json"))
    except Exception as exc:
        say(f"cannot read {log.uri}steps.json: {exc}")
        return 1
    (work / "steps.json").write_text(json.dumps(steps, indent=1))
    say(f"{len(steps)} step(s) from {log.uri}steps.json, working in {work}")
    mirror = Mirror(log)
    for step in steps:
        folder = work / "steps" / step["id"]
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "state.json").exists():
            step_runner.write_state(folder, state=step_runner.PENDING, name=step.get("name", ""))
        mirror.everything(step["id"], folder)
    # the steps find spark-submit and PySpark's Python in this venv
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.pop("PYTHONPATH", None)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        code = step_runner.run(
            work,
            on_change=mirror.changed,
            on_wait=mirror.progress,
            interval=args.mirror_interval,
            own_session=True,
        )
    except BaseException as exc:  # Interrupted, or a bug: leave nothing RUNNING
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        reason = str(exc) if isinstance(exc, Interrupted) else f"run-steps failed: {exc!r}"
        say(reason)
        for step in steps:
            folder = work / "steps" / step["id"]
            state = step_runner.read_state(folder).get("state")
            ended = step_runner.now()
            if state == step_runner.RUNNING:
                step_runner.write_state(
                    folder, state=step_runner.INTERRUPTED, reason=reason, ended=ended
                )
            elif state not in step_runner.TERMINAL:
                step_runner.write_state(
                    folder,
                    state=step_runner.CANCELLED,
                    reason=f"not started: {reason}",
                    ended=ended,
                )
        code = 1
    for step in steps:  # the last word in S3 is the final state of every step
        mirror.everything(step["id"], work / "steps" / step["id"])
    states = {s["id"]: step_runner.read_state(work / "steps" / s["id"])["state"] for s in steps}
    say(f"steps done: {states}")
    return code
