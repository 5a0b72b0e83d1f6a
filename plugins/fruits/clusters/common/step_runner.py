"""A cluster's steps, run one after another as EMR does, and their states: the state
names, the done rule and the tails of their logs, for every backend (standard library
only: it ships to the ec2 nodes).

    python step_runner.py <cluster-dir>

Reads ``<cluster-dir>/steps.json`` (``[{"id", "name", "argv"}]``) and, per step,
writes ``steps/<id>/state.json`` (PENDING -> RUNNING -> COMPLETED | FAILED), with the
command's output in ``steps/<id>/stdout`` and ``steps/<id>/stderr``. A failed step
cancels the ones after it (EMR's CANCEL_AND_WAIT). On the ``ec2`` nodes a
``<cluster-dir>/conf/spark-defaults.conf`` makes that folder the steps'
``SPARK_CONF_DIR``: the cluster's ``spark.authenticate`` secret and the executors' size,
which every driver needs (the ``local`` cluster's steps name its secret's file with
``--properties-file`` instead: a ``SPARK_CONF_DIR`` would keep its JVMs from Spark's
class archive, ``fruits.clusters.local.cluster.cluster_conf``). Started in its own session by the
``add_steps`` task, so it outlives that task and the teardown can end it, and all it
started, with one signal to its process group.

The ``ec2`` backend's nodes run the same loop (``node.py run-steps``) with hooks that
mirror each state change, and a running step's output, to S3; there each step runs
in a session of its own, and an exception in the runner (``node.py`` raises one on
SIGTERM) ends the running step's process group and marks the step INTERRUPTED.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# A step's states are EMR's: PENDING -> RUNNING -> COMPLETED, or one of FAILED_STATES.
PENDING, RUNNING, COMPLETED = "PENDING", "RUNNING", "COMPLETED"
FAILED, INTERRUPTED, CANCELLED = "FAILED", "INTERRUPTED", "CANCELLED"
FAILED_STATES = (FAILED, INTERRUPTED, CANCELLED)  # in the order a report names them
TERMINAL = (COMPLETED, *FAILED_STATES)  # a step in one of these never changes again
UNFINISHED = (PENDING, RUNNING)
STDERR_TAIL = 60  # lines of a failed step's stderr shown in the task log
LOG_TAIL = 40  # lines of a daemon's or a step's log shown elsewhere
DAEMON_GRACE = 20.0  # seconds a Spark daemon's process group gets between SIGTERM and SIGKILL
# log4j lines worth skipping when showing why a step failed
_NOISE = re.compile(r"^\d{2}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} (INFO|DEBUG) |^\s*$")

# hook(step_id, step_folder): after each state change / every `interval` s while it runs
Hook = Callable[[str, Path], None]


def all_done(step_ids: Sequence[str], states: Mapping[str, Mapping]) -> bool:
    """The steps are done when the last one COMPLETED (a failure cancels those after it)."""
    return states[step_ids[-1]]["state"] == COMPLETED


def log_tail(text: str, lines: int) -> str:
    """The last ``lines`` meaningful lines of a log: log4j INFO/DEBUG noise and blank
    lines dropped."""
    kept = [line for line in text.splitlines() if not _NOISE.match(line)]
    return "\n".join(kept[-lines:])


def file_tail(path: Path, lines: int = LOG_TAIL) -> str:
    """:func:`log_tail` of a log file, or a line saying it does not exist."""
    try:
        return log_tail(path.read_text(errors="replace"), lines)
    except FileNotFoundError:
        return f"({path} does not exist)"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_state(folder: Path, **state) -> None:
    path = folder / "state.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(state)
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(current, indent=1))
    os.replace(tmp, path)  # readers never see half a file


def read_state(folder: Path) -> dict:
    try:
        return json.loads((folder / "state.json").read_text())
    except FileNotFoundError:
        return {"state": PENDING}


def start_session(
    argv: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.Popen:
    """Start ``argv`` in a session (process group) of its own, its output appended to
    ``log_path``: it outlives the process that started it, and one ``killpg`` ends it
    with everything it started. Spark daemons and this runner start so, locally and on
    the ec2 nodes."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def end_process(proc: subprocess.Popen, *, group: bool, grace: float) -> None:
    """SIGTERM the process (its whole process group with ``group``), SIGKILL it after
    ``grace`` seconds, and collect it."""
    if proc.poll() is not None and not group:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


CONF_DIR = "conf"  # <cluster-dir>/conf/spark-defaults.conf: the steps' SPARK_CONF_DIR


def steps_env(cluster_dir: Path) -> dict[str, str]:
    """The steps' environment: this process's, and the cluster's own Spark configuration
    (its ``spark.authenticate`` secret, the executors' size) when the cluster dir has
    one: every driver the steps start needs the secret of the cluster it joins."""
    env = dict(os.environ)
    conf = cluster_dir / CONF_DIR
    if (conf / "spark-defaults.conf").is_file():
        env["SPARK_CONF_DIR"] = str(conf)
    return env


def run(
    cluster_dir: Path,
    *,
    on_change: Hook | None = None,
    on_wait: Hook | None = None,
    interval: float = 30.0,
    own_session: bool = False,
    grace: float = 10.0,
) -> int:
    """Run the steps in order; 0 if all completed, 1 otherwise.

    ``on_change`` is called after every state written, ``on_wait`` every ``interval``
    seconds while a step runs. ``own_session`` starts each step in a session (process
    group) of its own. If the runner is interrupted by an exception while a step runs,
    that step (its group, with ``own_session``) is ended, marked INTERRUPTED with the
    exception as reason, and the exception propagates.
    """
    steps = json.loads((cluster_dir / "steps.json").read_text())
    env = steps_env(cluster_dir)
    failed = None

    def change(step_id: str, folder: Path, **state) -> None:
        write_state(folder, **state)
        if on_change is not None:
            on_change(step_id, folder)

    for step in steps:
        sid = step["id"]
        folder = cluster_dir / "steps" / sid
        folder.mkdir(parents=True, exist_ok=True)
        if read_state(folder).get("state") in TERMINAL:
            continue
        if failed is not None:
            change(sid, folder, state=CANCELLED, reason=f"step {failed} failed", ended=now())
            continue
        change(sid, folder, state=RUNNING, started=now(), runner_pid=os.getpid())
        with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
            try:
                proc = subprocess.Popen(
                    step["argv"],
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=own_session,
                )
            except OSError as exc:  # no such program, not executable
                err.write(f"error: cannot run {step['argv'][0]!r}: {exc}\n".encode())
                code = None
            else:
                try:
                    code = _wait(proc, sid, folder, on_wait, interval)
                except BaseException as exc:
                    end_process(proc, group=own_session, grace=grace)
                    reason = str(exc) or type(exc).__name__
                    change(sid, folder, state=INTERRUPTED, reason=reason, ended=now())
                    raise
        if code == 0:
            change(sid, folder, state=COMPLETED, returncode=0, ended=now())
        elif code is None:
            change(sid, folder, state=FAILED, returncode=127, ended=now(),
                   reason=f"cannot run {step['argv'][0]!r}")  # fmt: skip
            failed = sid
        else:
            change(sid, folder, state=FAILED, returncode=code, ended=now())
            failed = sid
    return 0 if failed is None else 1


def _wait(
    proc: subprocess.Popen, sid: str, folder: Path, on_wait: Hook | None, interval: float
) -> int:
    if on_wait is None:
        return proc.wait()
    while True:
        try:
            return proc.wait(timeout=interval)
        except subprocess.TimeoutExpired:
            on_wait(sid, folder)


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
