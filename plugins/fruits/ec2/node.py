"""The program of an ``ec2`` cluster node: Python's standard library, boto3, and
``step_runner.py`` from its own folder (both sit in the job code bundle).

    node.py primary --host H --log-prefix LOG --workers N --timeout S --cluster-id ID
    node.py worker --host H --master spark://M:7077
    node.py run-steps --log-prefix LOG

``LOG`` is the cluster's ``s3://<bucket>/logs/ec2/<cluster-id>/``. The user data runs
``primary`` or ``worker`` once Java, Python and the code are installed; an SSM command
starts ``run-steps`` on the primary, detached (``fruits.ec2.run_steps_command``).

- ``primary`` starts the Spark master (``spark-class ...master.Master``, in a session of
  its own, its log in the work dir), waits until N workers are alive, then writes
  ``LOG/ready.json``. If the master exits or the timeout passes first, it stops the
  master, writes ``LOG/failed/primary.json`` (the reason, the master log's tail) and
  exits 1.
- ``worker`` waits for the master's port, starts a worker (all cores, RAM less 1 GiB by
  default) and returns once it has registered; exit 1, saying why, if it exits or does
  not register in time.
- ``run-steps`` runs ``LOG/steps.json`` (``[{"id", "name", "argv"}]``) in order with
  ``step_runner`` (a failed step cancels the rest), each step in a session of its own,
  and mirrors ``steps/<id>/state.json`` after every state change (stdout and stderr
  with it; the running step's output every ``--mirror-interval`` seconds) to
  ``LOG/steps/<id>/``. Exit 0 if every step completed. On SIGTERM the running step is
  ended and marked INTERRUPTED, steps not started CANCELLED, all mirrored, exit 1.

S3 goes through ``boto3.client("s3")``: region and endpoint from the environment or
``~/.aws/config`` (``AWS_ENDPOINT_URL`` points it at a local S3 in tests).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # step_runner.py sits next to us

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
WORK_DIR = Path("/opt/fruits/work")
REGISTERED = "Successfully registered with master"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED")


def say(message: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    print(f"{stamp} node: {message}", flush=True)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --- S3 ------------------------------------------------------------------------------


class LogPrefix:
    """``s3://bucket/prefix/``: where the node reports (objects written whole, JSON)."""

    def __init__(self, uri: str):
        m = re.fullmatch(r"s3://([^/]+)/(.*/)?", uri)
        if not m:
            raise SystemExit(f"node: not an s3://bucket/prefix/ (ending with /): {uri!r}")
        self.uri = uri
        self.bucket, self.prefix = m.group(1), m.group(2) or ""
        self._client = None

    @property
    def s3(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3", config=Config(retries={"mode": "standard", "max_attempts": 8})
            )
        return self._client

    def put(self, name: str, body: bytes, content_type: str = "text/plain") -> None:
        self.s3.put_object(
            Bucket=self.bucket, Key=self.prefix + name, Body=body, ContentType=content_type
        )

    def put_json(self, name: str, value: Any) -> None:
        self.put(name, json.dumps(value, indent=1).encode(), "application/json")

    def get_json(self, name: str) -> Any:
        body = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"]
        return json.loads(body.read())


# --- Spark daemons ---------------------------------------------------------------------


def spark_class(spark_home: str | None) -> str:
    """``bin/spark-class`` of ``--spark-home``, ``$SPARK_HOME`` or this Python's pyspark."""
    home = spark_home or os.environ.get("SPARK_HOME")
    if not home:
        spec = importlib.util.find_spec("pyspark")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("node: no --spark-home, no SPARK_HOME and no pyspark installed")
        home = next(iter(spec.submodule_search_locations))
    path = Path(home) / "bin" / "spark-class"
    if not path.is_file():
        raise SystemExit(f"node: {path} not found")
    return str(path)


def spark_env(host: str) -> dict[str, str]:
    """The daemons' environment: bound to ``host``, this Python for PySpark."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SPARK_LOCAL_IP"] = host
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    return env


def spawn(argv: list[str], log_path: Path, env: dict[str, str], record: Path) -> subprocess.Popen:
    """Start a daemon in a session of its own (it outlives us), output to ``log_path``;
    its pid goes to ``record`` (the process group to end, by the same id)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=log_path.parent,
            start_new_session=True,
        )
    record.write_text(json.dumps({"pid": proc.pid, "log": str(log_path), "argv": argv}))
    say(f"started {' '.join(argv)} (pid {proc.pid}, log {log_path})")
    return proc


def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """End the daemon's process group (SIGTERM, then SIGKILL) and collect it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} does not exist)"


def master_status(host: str, ui_port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://{host}:{ui_port}/json/", timeout=3) as r:
            return json.load(r)
    except (OSError, ValueError):
        return None


def cmd_primary(args: argparse.Namespace) -> int:
    log = LogPrefix(args.log_prefix)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    url = f"spark://{args.host}:{args.port}"
    ui = f"http://{args.host}:{args.ui_port}"
    log_path = work / "master.log"
    proc = None
    alive = 0
    try:
        argv = [
            spark_class(args.spark_home),
            MASTER_CLASS,
            "--host",
            args.host,
            "--port",
            str(args.port),
            "--webui-port",
            str(args.ui_port),
        ]
        proc = spawn(argv, log_path, spark_env(args.host), work / "master.json")
        say(f"waiting up to {args.timeout:g}s for {args.workers} worker(s) at {ui}/json/")
        deadline = time.monotonic() + args.timeout
        answered = False
        while True:
            code = proc.poll()
            if code is not None:
                error = (
                    f"the Spark master {url} exited (status {code}) with {alive} of "
                    f"{args.workers} workers registered"
                )
                break
            status = master_status(args.host, args.ui_port)
            if status is not None:
                answered = True
                count = int(status.get("aliveworkers", 0))
                if count != alive:
                    say(f"{count} of {args.workers} worker(s) alive")
                alive = count
                if alive >= args.workers:
                    ready = {
                        "cluster_id": args.cluster_id,
                        "master_url": url,
                        "workers": alive,
                        "ready_at": now(),
                        "ui_url": ui,
                    }
                    log.put_json("ready.json", ready)
                    say(f"cluster ready: {url} with {alive} worker(s); wrote {log.uri}ready.json")
                    return 0
            if time.monotonic() > deadline:
                error = (
                    f"only {alive} of {args.workers} workers registered with {url} "
                    f"within {args.timeout:g}s"
                )
                if not answered:
                    error += f" (the master's UI {ui} never answered)"
                break
            time.sleep(2)
    except (Exception, SystemExit) as exc:
        error = f"the primary could not start the cluster: {exc}"
    say(error)
    if proc is not None:
        say("stopping the Spark master")
        stop(proc)
    failure = {
        "role": "primary",
        "cluster_id": args.cluster_id,
        "master_url": url,
        "error": error,
        "log_tail": tail(log_path),
        "failed_at": now(),
    }
    log.put_json("failed/primary.json", failure)
    say(f"wrote {log.uri}failed/primary.json")
    return 1


def default_memory() -> str:
    """The worker's memory for executors: total RAM less 1 GiB (at least 512 MiB)."""
    try:
        text = Path("/proc/meminfo").read_text()
        total_mib = int(re.search(r"^MemTotal:\s+(\d+) kB", text, re.M).group(1)) // 1024
    except (OSError, AttributeError):
        total_mib = 2048
    return f"{max(512, total_mib - 1024)}m"


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def cmd_worker(args: argparse.Namespace) -> int:
    m = re.fullmatch(r"spark://([^:/]+):(\d+)", args.master)
    if not m:
        say(f"--master {args.master!r} is not spark://host:port")
        return 1
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.timeout
    say(f"waiting up to {args.timeout:g}s for the master {args.master}")
    while not port_open(m.group(1), int(m.group(2))):
        if time.monotonic() > deadline:
            say(f"the master {args.master} did not accept connections within {args.timeout:g}s")
            return 1
        time.sleep(2)
    cores = args.cores or os.cpu_count() or 1
    memory = args.memory or default_memory()
    log_path = work / "worker.log"
    argv = [
        spark_class(args.spark_home),
        WORKER_CLASS,
        args.master,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--webui-port",
        str(args.ui_port),
        "--cores",
        str(cores),
        "--memory",
        memory,
        "--work-dir",
        str(work / "executors"),
    ]
    proc = spawn(argv, log_path, spark_env(args.host), work / "worker.json")
    while True:
        code = proc.poll()
        if code is not None:
            say(f"the Spark worker exited at once (status {code}):\n{tail(log_path)}")
            return 1
        if log_path.exists() and REGISTERED in log_path.read_text(errors="replace"):
            say(f"worker ({cores} cores, {memory}) registered with {args.master}")
            return 0
        if time.monotonic() > deadline:
            say(
                f"the Spark worker did not register with {args.master} within "
                f"{args.timeout:g}s; stopping it:\n{tail(log_path)}"
            )
            stop(proc)
            return 1
        time.sleep(1)


# --- steps -----------------------------------------------------------------------------


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
        if state["state"] in TERMINAL:  # output first: who sees FAILED finds the stderr
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
    import step_runner

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
            step_runner.write_state(folder, state="PENDING", name=step.get("name", ""))
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
            if state == "RUNNING":
                step_runner.write_state(folder, state="INTERRUPTED", reason=reason, ended=now())
            elif state not in TERMINAL:
                step_runner.write_state(
                    folder, state="CANCELLED", reason=f"not started: {reason}", ended=now()
                )
        code = 1
    for step in steps:  # the last word in S3 is the final state of every step
        mirror.everything(step["id"], work / "steps" / step["id"])
    states = {s["id"]: step_runner.read_state(work / "steps" / s["id"])["state"] for s in steps}
    say(f"steps done: {states}")
    return code


# --- command line ----------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="A Spark standalone node of the ec2 backend.")
    sub = p.add_subparsers(dest="command", required=True)

    pri = sub.add_parser("primary", help="start the master; report ready.json or failed/")
    pri.add_argument("--host", required=True, help="this node's private IP")
    pri.add_argument("--log-prefix", required=True, help="s3://bucket/logs/ec2/<id>/")
    pri.add_argument("--workers", type=int, required=True, help="workers to wait for")
    pri.add_argument("--timeout", type=float, required=True, help="seconds to wait for them")
    pri.add_argument("--cluster-id", required=True)
    pri.add_argument("--port", type=int, default=7077)
    pri.add_argument("--ui-port", type=int, default=8080)
    pri.add_argument("--spark-home", help="default: $SPARK_HOME, else this Python's pyspark")
    pri.add_argument("--work-dir", default=str(WORK_DIR), help="daemon log and pid file")
    pri.set_defaults(func=cmd_primary)

    wrk = sub.add_parser("worker", help="start a worker; return once it has registered")
    wrk.add_argument("--host", required=True, help="this node's private IP")
    wrk.add_argument("--master", required=True, help="spark://<primary>:7077")
    wrk.add_argument("--port", type=int, default=0, help="0: any free port")
    wrk.add_argument("--ui-port", type=int, default=0, help="0: any free port")
    wrk.add_argument("--cores", type=int, default=0, help="default: all")
    wrk.add_argument("--memory", default="", help="default: total RAM less 1 GiB")
    wrk.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds for the master to answer and the worker to register",
    )
    wrk.add_argument("--spark-home", help="default: $SPARK_HOME, else this Python's pyspark")
    wrk.add_argument("--work-dir", default=str(WORK_DIR), help="logs, executors' folders")
    wrk.set_defaults(func=cmd_worker)

    run = sub.add_parser("run-steps", help="run LOG/steps.json, mirroring states to S3")
    run.add_argument("--log-prefix", required=True, help="s3://bucket/logs/ec2/<id>/")
    run.add_argument("--work-dir", default=str(WORK_DIR / "steps"), help="steps' local files")
    run.add_argument(
        "--mirror-interval",
        type=float,
        default=30.0,
        help="seconds between copies of a running step's output",
    )
    run.set_defaults(func=cmd_run_steps)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
