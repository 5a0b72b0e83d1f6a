"""The program of an ``ec2`` cluster node: Python's standard library, boto3, and the
modules next to it in the code bundle (``fruits.clusters.ec2.user_data.node_program``):
``node_report``, ``node_daemons``, ``node_steps``, and the backends' shared ``step_runner``
and ``standalone``.

    node.py primary --host H --log-prefix LOG --workers N --timeout S --cluster-id ID
    node.py worker --host H --master spark://M:7077
    node.py run-steps --log-prefix LOG

``LOG`` is the cluster's ``s3://<bucket>/logs/ec2/<cluster-id>/``. The user data runs
``primary`` or ``worker`` once Java, Python and the code are installed; an SSM command
starts ``run-steps`` on the primary, detached (``fruits.clusters.ec2.user_data.run_steps_command``).

- ``primary`` starts the Spark master (``spark-class ...master.Master``, in a session of
  its own, its log in the work dir), waits until N workers are alive, then writes
  ``LOG/ready.json``. If the master exits or the timeout passes first, it stops the
  master, writes ``LOG/failed/primary.json`` (the reason, the master log's tail) and
  exits 1.
- ``worker`` waits for the master's port, starts a worker (all cores, RAM less 1 GiB by
  default) and returns once it has registered; exit 1, saying why, if it exits or does
  not register in time.
- ``run-steps`` (``node_steps``) runs ``LOG/steps.json`` (``[{"id", "name", "argv"}]``)
  in order, each step in a session of its own, and mirrors ``steps/<id>/state.json``
  after every state change (stdout and stderr with it; the running step's output every
  ``--mirror-interval`` seconds) to ``LOG/steps/<id>/``. Exit 0 if every step
  completed. On SIGTERM the running step is ended and marked INTERRUPTED, steps not
  started CANCELLED, all mirrored, exit 1.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bundle's modules sit next to us

from node_daemons import (  # noqa: E402
    default_memory,
    port_open,
    spark_class,
    spark_env,
    spawn,
    stop,
)
from node_report import LogPrefix, say  # noqa: E402
from node_steps import cmd_run_steps  # noqa: E402
from standalone import (  # noqa: E402
    MASTER_CLASS,
    MASTER_PORT,
    REGISTERED,
    WORKER_CLASS,
    alive_workers,
    declare_ready,
    quorum,
)
from step_runner import file_tail as tail  # noqa: E402
from step_runner import now  # noqa: E402

QUORUM_GRACE = 120.0  # seconds: the stragglers' chance once a quorum of workers joined
RUNNER_LOG = "/var/log/fruits-steps.log"  # fruits.clusters.ec2.user_data.run_steps_command's
HEARTBEAT = 60.0  # seconds between two rewrites of runner.json while the runner runs


def cmd_run_steps_reported(args: argparse.Namespace) -> int:
    """``run-steps`` that says it runs: ``LOG/runner.json`` is ``running`` before the
    first step (rewritten every ``--heartbeat`` seconds) and ``exited`` (with the status,
    and the error if it crashed) however it ends; its own log goes to ``LOG/runner.log``
    then. The ``wait_for_step`` sensor fails at once on an ``exited`` runner whose steps
    are not done, and on a ``running`` one that stopped beating."""
    log = LogPrefix(args.log_prefix)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    with (work / ".lock").open("w") as lock:  # a second runner must not report the first's
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another run-steps is running in {work}: not starting a second one")
            return 1
        fcntl.flock(lock, fcntl.LOCK_UN)
    running = {"state": "running", "pid": os.getpid(), "started_at": now()}
    log.put_json("runner.json", running)
    stop = threading.Event()

    def beat() -> None:  # a runner killed outright (SIGKILL, OOM) stops beating
        while not stop.wait(args.heartbeat):
            try:
                log.put_json("runner.json", {**running, "beat_at": now()})
            except Exception as exc:  # S3 unreachable for a while: the next beat
                say(f"could not write {log.uri}runner.json: {exc}")

    beating = threading.Thread(target=beat, name="runner-heartbeat", daemon=True)
    beating.start()
    code, error = 1, ""
    try:
        code = cmd_run_steps(args)
        return code
    except BaseException as exc:
        error = f"run-steps crashed: {exc!r}"
        say(error)
        raise
    finally:
        stop.set()
        beating.join(timeout=30)
        sys.stdout.flush()
        path = Path(args.runner_log)
        try:
            if path.is_file():
                log.put("runner.log", tail(path, 400).encode())
            log.put_json(
                "runner.json",
                {"state": "exited", "returncode": code, "error": error, "ended_at": now()},
            )
        except Exception as exc:  # S3 unreachable: the sensor's own checks remain
            say(f"could not report the runner's end to {log.uri}: {exc}")


def daemon_argv(args: argparse.Namespace, main_class: str, *operands: str) -> list[str]:
    """``spark-class <main_class> [operands] --host --port --webui-port`` from the
    command's options."""
    return [
        spark_class(args.spark_home), main_class, *operands,
        "--host", args.host, "--port", str(args.port), "--webui-port", str(args.ui_port),
    ]  # fmt: skip


def cmd_primary(args: argparse.Namespace) -> int:
    log = LogPrefix(args.log_prefix)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    url = f"spark://{args.host}:{args.port}"
    ui = f"http://{args.host}:{args.ui_port}"
    log_path = work / "master.log"
    proc = None
    alive = 0
    need = quorum(args.workers)
    quorum_since: float | None = None  # since when a quorum (not all) has been alive
    try:
        argv = daemon_argv(args, MASTER_CLASS)
        proc = spawn(argv, log_path, spark_env(args.host), work / "master.json")
        say(
            f"waiting up to {args.timeout:g}s for {args.workers} worker(s) at {ui}/json/ "
            f"(ready with all, or with a quorum of {need} alive for {args.quorum_grace:g}s)"
        )
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
            count = alive_workers(args.host, args.ui_port)
            if count is not None:
                answered = True
                if count != alive:
                    say(f"{count} of {args.workers} worker(s) alive")
                alive = count
                if alive < need:
                    quorum_since = None
                elif quorum_since is None:
                    quorum_since = time.monotonic()
                held = 0.0 if quorum_since is None else time.monotonic() - quorum_since
                # at the deadline a quorum is enough, whatever the grace
                grace = 0.0 if time.monotonic() > deadline else args.quorum_grace
                if declare_ready(alive, args.workers, held, grace):
                    ready = {
                        "cluster_id": args.cluster_id,
                        "instance_id": args.instance_id,
                        "master_url": url,
                        "workers": alive,
                        "expected_workers": args.workers,
                        "quorum": need,
                        "ready_at": now(),
                        "ui_url": ui,
                    }
                    log.put_json("ready.json", ready)
                    say(f"cluster ready: {url} with {alive} worker(s); wrote {log.uri}ready.json")
                    return 0
            if time.monotonic() > deadline:
                error = (
                    f"only {alive} of {args.workers} workers registered with {url} "
                    f"within {args.timeout:g}s (a quorum is {need})"
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
        "instance_id": args.instance_id,
        "cluster_id": args.cluster_id,
        "master_url": url,
        "error": error,
        "log_tail": tail(log_path),
        "failed_at": now(),
    }
    log.put_json("failed/primary.json", failure)
    say(f"wrote {log.uri}failed/primary.json")
    return 1


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
        *daemon_argv(args, WORKER_CLASS, args.master),
        "--cores", str(cores), "--memory", memory, "--work-dir", str(work / "executors"),
    ]  # fmt: skip
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="A Spark standalone node of the ec2 backend.")
    sub = p.add_subparsers(dest="command", required=True)

    pri = sub.add_parser("primary", help="start the master; report ready.json or failed/")
    pri.add_argument("--host", required=True, help="this node's private IP")
    pri.add_argument("--log-prefix", required=True, help="s3://bucket/logs/ec2/<id>/")
    pri.add_argument("--workers", type=int, required=True, help="workers to wait for")
    pri.add_argument("--timeout", type=float, required=True, help="seconds to wait for them")
    pri.add_argument("--cluster-id", required=True)
    pri.add_argument("--instance-id", default="", help="this node's: ready.json names it")
    pri.add_argument(
        "--quorum-grace",
        type=float,
        default=QUORUM_GRACE,
        help="seconds a quorum of workers (not all) must be alive before the cluster is ready",
    )
    pri.add_argument("--port", type=int, default=MASTER_PORT)
    pri.add_argument("--ui-port", type=int, default=8080)
    pri.add_argument("--spark-home", help="default: $SPARK_HOME, else this Python's pyspark")
    pri.add_argument("--work-dir", required=True, help="daemon log and pid file")
    pri.set_defaults(func=cmd_primary)

    wrk = sub.add_parser("worker", help="start a worker; return once it has registered")
    wrk.add_argument("--host", required=True, help="this node's private IP")
    wrk.add_argument("--master", required=True, help="spark://<primary>:<port>")
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
    wrk.add_argument("--work-dir", required=True, help="logs, executors' folders")
    wrk.set_defaults(func=cmd_worker)

    run = sub.add_parser("run-steps", help="run LOG/steps.json, mirroring states to S3")
    run.add_argument("--log-prefix", required=True, help="s3://bucket/logs/ec2/<id>/")
    run.add_argument("--work-dir", required=True, help="steps' local files")
    run.add_argument(
        "--heartbeat",
        type=float,
        default=HEARTBEAT,
        help="seconds between two rewrites of LOG/runner.json (a runner that stops is dead)",
    )
    run.add_argument(
        "--runner-log",
        default=RUNNER_LOG,
        help="this runner's own output (the SSM command's redirect): uploaded as runner.log",
    )
    run.add_argument(
        "--mirror-interval",
        type=float,
        default=30.0,
        help="seconds between copies of a running step's output",
    )
    run.set_defaults(func=cmd_run_steps_reported)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
