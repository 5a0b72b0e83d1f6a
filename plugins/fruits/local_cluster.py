"""The ``local`` backend: a Spark standalone cluster on the Airflow worker, on loopback.

It mirrors EMR's life cycle so the DAG keeps one shape:

- ``create_job_flow`` -> :func:`start_cluster`: a master and a worker
  (``spark-class org.apache.spark.deploy.{master.Master,worker.Worker}``) on
  127.0.0.1 with free ports, in their own process groups; their pids (and start
  times) go to ``<scratch>/clusters/<id>/cluster.json``. Returns the cluster id.
- ``add_steps`` -> :func:`add_steps`: the run's EMR-format steps rewritten by
  :func:`fruits.steps.localize`; inputs staged from S3; one runner process
  (``step_runner.py``) runs the steps in order, like EMR's step queue. Returns step ids.
- ``wait_for_step`` -> :func:`wait_for_steps` then :func:`upload_outputs`: polls the
  steps' state files; a failed step fails the task with its stderr; on success the
  outputs go to their s3:// URIs, the run's staging prefix (local Spark has no s3a
  connector here); ``publish_batch`` switches them in, as on EMR.
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

    python -m fruits.local_cluster stop-all <scratch>      # every cluster still running
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fruits import s3sync, step_runner
from fruits.sparkenv import free_port, spark_bin, spark_env
from fruits.steps import localize

log = logging.getLogger(__name__)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
START_TIMEOUT = 180  # seconds for the master to come up and the worker to register
# log4j lines worth skipping when showing why a step failed
_NOISE = re.compile(r"^\d{2}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} (INFO|DEBUG) |^\s*$")


class ClusterError(RuntimeError):
    """The local cluster could not start, or is gone."""


class StepFailed(RuntimeError):
    """A step ended in FAILED, CANCELLED or INTERRUPTED; the message carries its stderr."""


# --- process bookkeeping: end exactly what we started -------------------------------


def _create_time(pid: int) -> float | None:
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


def _spawn(argv: list[str], log_path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,  # its own process group: outlives the task, one killpg ends it
        )
    return {"pid": proc.pid, "create_time": _create_time(proc.pid), "log": str(log_path)}


def _alive(proc: Mapping[str, Any] | None) -> bool:
    """The recorded process still runs and is the one we started (pids get reused)."""
    if not proc or not proc.get("pid"):
        return False
    created = _create_time(int(proc["pid"]))
    if created is None:
        return False
    expected = proc.get("create_time")
    return expected is None or abs(created - float(expected)) < 1.0


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
    if _alive(proc):
        return True
    return _create_time(pid) is None and _group_exists(pid)


def _end_group(name: str, proc: Mapping[str, Any] | None, grace: float = 20.0) -> str:
    """SIGTERM the recorded process group, SIGKILL it after ``grace`` seconds; either way
    wait (with a deadline) until the group is gone and its leader collected: a signal is
    delivered some time after ``killpg`` returns, and a leader that dies after our last
    look would stay a zombie."""
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


KILL_WAIT = 30.0  # seconds for the kernel to end a SIGKILLed group (long on a loaded host)


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


# --- the cluster ----------------------------------------------------------------------


def cluster_dir(scratch: Path, cluster_id: str) -> Path:
    if not re.fullmatch(r"local-[0-9A-Za-z-]+", cluster_id or ""):
        raise ClusterError(f"not a local cluster id: {cluster_id!r}")
    return scratch / "clusters" / cluster_id


def read_cluster(scratch: Path, cluster_id: str) -> dict[str, Any]:
    path = cluster_dir(scratch, cluster_id) / "cluster.json"
    if not path.exists():
        raise ClusterError(f"cluster {cluster_id}: no {path}")
    return json.loads(path.read_text())


def _write_cluster(folder: Path, info: Mapping[str, Any]) -> None:
    tmp = folder / "cluster.json.tmp"
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, folder / "cluster.json")


def _master_status(ui_port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return json.load(r)
    except (OSError, ValueError):
        return None


def start_cluster(
    scratch: Path,
    *,
    cores: int,
    memory: str,
    name: str = "fruits",
    timeout: float = START_TIMEOUT,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Start a master and one worker on 127.0.0.1; return the cluster id once the worker
    has registered. On any failure, what was started is stopped again.

    The calling process is recorded as the cluster's owner (see :func:`reap_abandoned`);
    ``labels`` (run id, batch) are recorded too, to say whose a leftover cluster was."""
    cluster_id = f"local-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
    folder = cluster_dir(scratch, cluster_id)
    folder.mkdir(parents=True)
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
        "owner": {"pid": os.getpid(), "create_time": _create_time(os.getpid())},
        "labels": dict(labels or {}),
        "state": "STARTING",
    }
    env = spark_env()
    spark_class = spark_bin("spark-class")
    try:
        info["processes"]["master"] = _spawn(
            [spark_class, MASTER_CLASS, "--host", "127.0.0.1",
             "--port", str(ports["master"]), "--webui-port", str(ports["master_ui"])],
            folder / "logs" / "master.log",
            env,
        )  # fmt: skip
        _write_cluster(folder, info)
        info["processes"]["worker"] = _spawn(
            [spark_class, WORKER_CLASS, info["master_url"], "--host", "127.0.0.1",
             "--cores", str(cores), "--memory", memory,
             "--port", str(ports["worker"]), "--webui-port", str(ports["worker_ui"]),
             "--work-dir", str(folder / "work")],
            folder / "logs" / "worker.log",
            env,
        )  # fmt: skip
        _write_cluster(folder, info)
        deadline = time.monotonic() + timeout
        while True:
            status = _master_status(ports["master_ui"])
            if status and status.get("aliveworkers", 0) >= 1:
                break
            for role in ("master", "worker"):
                if not _alive(info["processes"][role]):
                    raise ClusterError(
                        f"the Spark {role} exited while starting:\n"
                        + tail(Path(info["processes"][role]["log"]), 30)
                    )
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"no worker registered with {info['master_url']} within {timeout:.0f}s:\n"
                    + tail(folder / "logs" / "worker.log", 30)
                )
            time.sleep(0.5)
    except BaseException:
        for role in ("worker", "master"):
            _end_group(role, info["processes"].get(role), grace=5)
        info["state"] = "TERMINATED_WITH_ERRORS"
        _write_cluster(folder, info)
        raise
    info["state"] = "WAITING"
    _write_cluster(folder, info)
    log.info("local cluster %s: master %s, UI %s", cluster_id, info["master_url"], info["ui_url"])
    return cluster_id


def add_steps(
    scratch: Path,
    cluster_id: str,
    steps: list[dict[str, Any]],
    stage: Callable[[str, Path], Any],
) -> list[str]:
    """Stage the steps' inputs (``stage(uri, path)``), start the runner; return step ids."""
    info = read_cluster(scratch, cluster_id)
    folder = Path(info["dir"])
    if not (_alive(info["processes"].get("master")) and _alive(info["processes"].get("worker"))):
        raise ClusterError(f"cluster {cluster_id} is not running (state {info.get('state')})")
    if info.get("steps"):
        raise ClusterError(f"cluster {cluster_id} already runs steps {info['steps']}")
    local = localize(
        steps,
        master_url=info["master_url"],
        spark_submit=spark_bin("spark-submit"),
        s3_root=folder / "s3",
        extra_conf={"spark.ui.enabled": "false", "spark.executor.memory": "1g"},
    )
    for uri, path in local.inputs.items():
        log.info("staging %s -> %s", uri, path)
        stage(uri, path)
    for path in local.outputs.values():  # a re-run never sees an older run's files
        shutil.rmtree(path, ignore_errors=True)
    ids = [f"s-LOCAL{n:02d}{secrets.token_hex(4).upper()}" for n in range(len(local.commands))]
    spec = [
        {"id": sid, "name": name, "argv": argv}
        for sid, name, argv in zip(ids, local.names, local.commands, strict=True)
    ]
    for sid in ids:
        (folder / "steps" / sid).mkdir(parents=True, exist_ok=True)
        step_runner.write_state(folder / "steps" / sid, state="PENDING")
    (folder / "steps.json").write_text(json.dumps(spec, indent=1))
    (folder / "outputs.json").write_text(
        json.dumps({uri: str(path) for uri, path in local.outputs.items()}, indent=1)
    )
    info["processes"]["steps"] = _spawn(
        [sys.executable, step_runner.__file__, str(folder)],
        folder / "logs" / "steps.log",
        spark_env(),
    )
    info["steps"] = ids
    info["state"] = "RUNNING"
    _write_cluster(folder, info)
    for sid, name, argv in zip(ids, local.names, local.commands, strict=True):
        log.info("step %s (%s): %s", sid, name, " ".join(argv))
    return ids


def step_states(scratch: Path, cluster_id: str, step_ids: list[str]) -> dict[str, dict]:
    """Each step's state; a step left RUNNING by a runner that is gone becomes INTERRUPTED."""
    info = read_cluster(scratch, cluster_id)
    folder = Path(info["dir"])
    runner_alive = _alive(info["processes"].get("steps"))
    states = {}
    for sid in step_ids:
        state = step_runner.read_state(folder / "steps" / sid)
        if state["state"] in ("PENDING", "RUNNING") and not runner_alive:
            # re-read: the runner may have finished between the two looks
            state = step_runner.read_state(folder / "steps" / sid)
            if state["state"] in ("PENDING", "RUNNING"):
                step_runner.write_state(
                    folder / "steps" / sid,
                    state="INTERRUPTED",
                    reason="the step runner is gone (cluster removed or worker restarted)",
                )
                state = step_runner.read_state(folder / "steps" / sid)
        states[sid] = state
    return states


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` meaningful lines of a log (log4j INFO/DEBUG noise dropped)."""
    if not path.exists():
        return f"({path} does not exist)"
    text = path.read_text(errors="replace").splitlines()
    kept = [line for line in text if not _NOISE.match(line)]
    return "\n".join(kept[-lines:])


def failure_report(scratch: Path, cluster_id: str, step_id: str, state: Mapping) -> str:
    folder = Path(read_cluster(scratch, cluster_id)["dir"]) / "steps" / step_id
    errors = [
        line
        for name in ("stderr", "stdout")
        if (folder / name).exists()
        for line in (folder / name).read_text(errors="replace").splitlines()
        if line.startswith("error:")
    ]
    head = f"step {step_id} {state.get('state')}"
    if state.get("returncode") is not None:
        head += f" (exit status {state['returncode']})"
    if state.get("reason"):
        head += f": {state['reason']}"
    parts = [head]
    if errors:
        parts.append("\n".join(errors))
    parts.append(f"--- stderr tail ({folder / 'stderr'}) ---\n{tail(folder / 'stderr')}")
    return "\n".join(parts)


def check_steps(
    scratch: Path, cluster_id: str, step_ids: list[str], seen: dict[str, str] | None = None
) -> dict[str, dict] | None:
    """One look at the steps: their states once the last one completed, None while they
    run; StepFailed (with the failed step's stderr) if one failed, was cancelled or
    interrupted. ``seen`` (step id -> state last logged) keeps the log to changes."""
    seen = {} if seen is None else seen
    states = step_states(scratch, cluster_id, step_ids)
    for sid, state in states.items():
        if seen.get(sid) != state["state"]:
            log.info("step %s: %s", sid, state["state"])
            seen[sid] = state["state"]
            if state["state"] == "COMPLETED":
                folder = Path(read_cluster(scratch, cluster_id)["dir"]) / "steps" / sid
                log.info("step %s output:\n%s", sid, tail(folder / "stdout", 5))
    for bad in ("FAILED", "INTERRUPTED", "CANCELLED"):  # the cause before its consequences
        sid = next((s for s in step_ids if states[s]["state"] == bad), None)
        if sid is not None:
            raise StepFailed(failure_report(scratch, cluster_id, sid, states[sid]))
    return states if states[step_ids[-1]]["state"] == "COMPLETED" else None


def timeout_report(scratch: Path, cluster_id: str, step_ids: list[str], timeout: float) -> str:
    """Why the steps are late: the running step's (or the last step's) state and stderr."""
    states = step_states(scratch, cluster_id, step_ids)
    running = [s for s in step_ids if states[s]["state"] == "RUNNING"]
    sid = running[0] if running else step_ids[-1]
    return f"the steps did not finish within {timeout:.0f}s\n" + failure_report(
        scratch, cluster_id, sid, states[sid]
    )


def wait_for_steps(
    scratch: Path,
    cluster_id: str,
    step_ids: list[str],
    *,
    timeout: float,
    poke_interval: float = 2.0,
) -> dict[str, dict]:
    """Block until the last step completes; StepFailed (with the failed step's stderr)
    if a step fails or the timeout passes."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while True:
        states = check_steps(scratch, cluster_id, step_ids, seen)
        if states is not None:
            return states
        if time.monotonic() > deadline:
            raise StepFailed(timeout_report(scratch, cluster_id, step_ids, timeout))
        time.sleep(poke_interval)


def upload_outputs(scratch: Path, cluster_id: str, hook: Any) -> dict[str, dict]:
    """Send each step output folder to its s3:// URI (the run's staging prefix: the
    published outputs change only in publish_batch)."""
    folder = Path(read_cluster(scratch, cluster_id)["dir"])
    outputs = json.loads((folder / "outputs.json").read_text())
    # Uploading mirrors: an empty folder would wipe what is there. Refuse unless every
    # output is there (a retry after the teardown removed them, say).
    missing = [uri for uri, path in outputs.items() if not any(Path(path).glob("[!._]*"))]
    if missing:
        raise ClusterError(
            f"cluster {cluster_id}: no local output for {', '.join(missing)} (removed with "
            "the cluster?); nothing uploaded. Clear the whole run to compute them again."
        )
    uploaded = {}
    for uri, path in outputs.items():
        rewrite_paths(Path(path), folder / "s3")
        uploaded[uri] = s3sync.publish_folder(hook, Path(path), uri).as_dict()
    return uploaded


def rewrite_paths(output: Path, s3_root: Path) -> None:
    """Make the published outputs name images as on EMR: the jobs saw staged copies
    (``file:<s3_root>/bucket/key``), the outputs say ``s3://bucket/key``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = str(s3_root).rstrip("/")
    pattern = f"^(file:)?{re.escape(root)}/"
    for part in output.glob("*.parquet"):
        if part.name.startswith((".", "_")):
            continue
        table = pq.read_table(part)
        if "path" not in table.column_names:
            continue
        paths = pc.replace_substring_regex(table["path"], pattern=pattern, replacement="s3://")
        table = table.set_column(table.schema.get_field_index("path"), "path", paths)
        pq.write_table(table, part)  # the schema's metadata (model, weights) is kept
    for name in ("report.json",):
        report = output / name
        if report.exists():
            text = report.read_text()
            text = re.sub(f"(file:)?{re.escape(root)}/", "s3://", text)
            report.write_text(text)


def stop_cluster(scratch: Path, cluster_id: str) -> dict[str, str]:
    """End the runner, the worker (and its executors) and the master; delete staged data.
    Safe to call again: what is not running is left alone."""
    info = read_cluster(scratch, cluster_id)
    folder = Path(info["dir"])
    ended = {
        role: _end_group(role, info["processes"].get(role))
        for role in ("steps", "worker", "master")
    }
    shutil.rmtree(folder / "s3", ignore_errors=True)  # staged inputs, outputs (now in S3)
    info["state"] = "TERMINATED"
    _write_cluster(folder, info)
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
        if info.get("state") == "TERMINATED" or _alive(info.get("owner")):
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
