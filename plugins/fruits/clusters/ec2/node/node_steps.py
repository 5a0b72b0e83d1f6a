"""``node.py run-steps``: the primary runs the cluster's steps with ``step_runner`` (the
local backend's runner, each step in a session of its own) and mirrors every state
change, and a running step's output, to ``LOG/steps/<id>/``, where the
``wait_for_step`` sensor reads them. Standard library and boto3 only: it runs on the
node, with ``step_runner.py``, ``standalone.py``, ``executor_sizing.py`` and
``node_report.py`` from the same folder.

- Output goes up in parts: each poll sends only the bytes written since the last one,
  as ``steps/<id>/stdout.parts/00001``... (the whole output, every byte once), and
  refreshes ``steps/<id>/stdout`` (and ``stderr``), the last :data:`TAIL_BYTES` of it,
  which the sensor shows (while the step runs, every :data:`TAIL_EVERY` seconds at
  most; at its end, always). (Uploading the whole file on every poll, into a versioned
  bucket, kept a copy of it per poll.)
- The steps' ``spark-submit`` read ``<work>/conf/`` (``SPARK_CONF_DIR``): the node's
  Spark configuration (the cluster's ``spark.authenticate`` secret, scratch and event
  log dirs) plus the executors' size for the workers that joined
  (:func:`executor_conf`): Spark's default executor is 1 GiB.
- Spark's event logs (``spark.eventLog.dir``, local on the node) go to
  ``LOG/spark-events/`` as each step ends; a driver's own log is its step's stderr.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import executor_sizing
import standalone
import step_runner
from node_daemons import spark_conf_dir
from node_report import LogPrefix, say

TAIL_BYTES = 64 * 1024  # the refreshed tail of a step's output: what the sensor shows
TAIL_EVERY = 300.0  # seconds between refreshes of a running step's tail (each is a version)


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
    """Copies a step's local files to ``LOG/steps/<id>/``: state.json whole, the output
    as new-bytes parts plus a bounded tail. Never lets an S3 error stop the steps (the
    next change, or the final mirror, sends what is still missing)."""

    OUTPUTS = ("stdout", "stderr")

    def __init__(self, log: LogPrefix, events: Path | None = None, tail_every: float = TAIL_EVERY):
        self.log = log
        self.events = events  # spark.eventLog.dir on this node
        self.tail_every = tail_every
        self.sent: dict[tuple[str, str], tuple[int, int]] = {}  # -> (bytes sent, parts)
        self.tails: dict[tuple[str, str], tuple[int, float]] = {}  # -> (size, when) sent
        self.events_sent: set[str] = set()

    def _put(self, key: str, body: bytes, kind: str = "text/plain") -> bool:
        try:
            self.log.put(key, body, kind)
            return True
        except Exception as exc:  # S3 unreachable for a while
            say(f"could not copy to {self.log.uri}{key}: {exc}")
            return False

    def _output(self, sid: str, folder: Path, name: str, final: bool = True) -> None:
        """The bytes of ``name`` not sent yet as the next part; then its tail, if it grew
        (while the step runs, at most every ``tail_every`` seconds)."""
        path = folder / name
        if not path.exists():
            return
        key = (sid, name)
        offset, part = self.sent.get(key, (0, 0))
        with path.open("rb") as f:
            f.seek(offset)
            new = f.read()
        if new and self._put(f"steps/{sid}/{name}.parts/{part + 1:05d}", new):
            offset, part = offset + len(new), part + 1
            self.sent[key] = (offset, part)
        size, when = self.tails.get(key, (0, -math.inf))
        if offset and size != offset and (final or time.monotonic() - when >= self.tail_every):
            with path.open("rb") as f:
                f.seek(max(0, offset - TAIL_BYTES))
                tail = f.read(min(offset, TAIL_BYTES))
            if offset > TAIL_BYTES:
                head = f"[{offset - TAIL_BYTES} earlier bytes: {name}.parts/]\n"
                tail = head.encode() + tail
            if self._put(f"steps/{sid}/{name}", tail):
                self.tails[key] = (offset, time.monotonic())

    def _state(self, sid: str, folder: Path) -> None:
        path = folder / "state.json"
        if path.exists():
            self._put(f"steps/{sid}/state.json", path.read_bytes(), "application/json")

    def _events(self) -> None:
        """The event logs of finished applications not sent yet: a file, or a rolling
        log's folder (Spark 4's default, ``eventlog_v2_<app>/``), once nothing in it is
        ``*.inprogress`` any more (Spark renames that at the end)."""
        if self.events is None or not self.events.is_dir():
            return
        for path in sorted(self.events.iterdir()):
            if path.name.startswith("."):  # Hadoop's .crc checksums
                continue
            files = (
                sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
                if path.is_dir()
                else [path]
            )
            if path.name in self.events_sent or any(
                p.name.endswith(".inprogress") for p in [path, *files]
            ):
                continue
            sent = [
                self._put(
                    f"spark-events/{p.relative_to(self.events).as_posix()}",
                    p.read_bytes(),
                    "application/octet-stream",
                )
                for p in files
            ]
            if all(sent):
                self.events_sent.add(path.name)

    def changed(self, sid: str, folder: Path) -> None:
        state = json.loads((folder / "state.json").read_text())
        say(
            f"step {sid}: {state['state']}" + (f" ({state['reason']})" if "reason" in state else "")
        )
        if state["state"] in step_runner.TERMINAL:  # output first: who sees FAILED finds stderr
            for name in self.OUTPUTS:
                self._output(sid, folder, name)
            self._events()
        self._state(sid, folder)

    def progress(self, sid: str, folder: Path) -> None:
        for name in self.OUTPUTS:
            self._output(sid, folder, name, final=False)

    def everything(self, sid: str, folder: Path) -> None:
        for name in self.OUTPUTS:
            self._output(sid, folder, name)
        self._events()
        self._state(sid, folder)


def executor_conf(ready: Any) -> dict[str, str]:
    """The executors' size for the workers that joined (the smallest of them), from
    the master's status page named in ``ready.json``; empty if it does not answer."""
    m = re.fullmatch(r"http://([^:/]+):(\d+)", str((ready or {}).get("ui_url", "")))
    status = standalone.master_status(m.group(1), int(m.group(2))) if m else None
    shapes = standalone.worker_shapes(status or {})
    if not shapes:
        return {}
    cores = min(c for c, _ in shapes)
    memory = min(mib for _, mib in shapes)
    return executor_sizing.for_worker(cores, memory).spark_conf()


def steps_conf(work: Path, node_conf: Path, extra: dict[str, str]) -> dict[str, str]:
    """Write ``<work>/conf/``: the node's ``spark-defaults.conf`` (its secret, scratch and
    event log dirs) plus ``extra``, and its ``spark-env.sh``; the steps read it as their
    ``SPARK_CONF_DIR`` (:func:`step_runner.steps_env`). Returns the configuration."""
    conf_dir = work / step_runner.CONF_DIR
    conf_dir.mkdir(mode=0o700, exist_ok=True)
    defaults = node_conf / standalone.CONF_FILE
    conf = {**(standalone.read_conf(defaults) if defaults.is_file() else {}), **extra}
    standalone.write_conf(conf_dir / standalone.CONF_FILE, conf)
    env = node_conf / "spark-env.sh"
    if env.is_file():
        (conf_dir / "spark-env.sh").write_text(env.read_text())
    return conf


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
    try:
        sizes = executor_conf(log.get_json("ready.json"))
    except Exception as exc:  # no ready.json (run by hand): Spark's defaults
        sizes = {}
        say(f"no executor size: cannot read {log.uri}ready.json ({exc})")
    conf = steps_conf(work, spark_conf_dir(), sizes)
    say(f"the steps' Spark configuration: {work / step_runner.CONF_DIR} (executors {sizes})")
    if conf.get("spark.executorEnv.TMPDIR"):  # the node's scratch, not /tmp (tmpfs)
        os.environ["TMPDIR"] = conf["spark.executorEnv.TMPDIR"]
    events = conf.get("spark.eventLog.dir", "")  # local (file:), sent up by the mirror
    mirror = Mirror(
        log, Path(re.sub(r"^file:(//)?", "", events)) if events.startswith("file:") else None
    )
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
