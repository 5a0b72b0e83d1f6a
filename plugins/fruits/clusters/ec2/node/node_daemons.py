"""The Spark daemons of an ``ec2`` node: found in the node's pyspark, started detached
(each in a session of its own, so it outlives ``node.py``), watched through the
master's JSON status page, and ended by process group. Standard library only, with
``step_runner.py`` from the same folder: it runs on the node."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import executor_sizing
from node_report import say
from step_runner import DAEMON_GRACE, end_process, start_session


def spark_home(given: str | None = None) -> Path:
    """``given``, ``$SPARK_HOME`` or this Python's pyspark."""
    home = given or os.environ.get("SPARK_HOME")
    if not home:
        spec = importlib.util.find_spec("pyspark")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("node: no --spark-home, no SPARK_HOME and no pyspark installed")
        home = next(iter(spec.submodule_search_locations))
    return Path(home)


def spark_conf_dir() -> Path:
    """Where this node's Spark configuration is: ``$SPARK_CONF_DIR``, else ``conf/`` in
    :func:`spark_home` (the user data writes it there)."""
    given = os.environ.get("SPARK_CONF_DIR")
    return Path(given) if given else spark_home() / "conf"


def spark_class(given_home: str | None) -> str:
    """``bin/spark-class`` of ``--spark-home``, ``$SPARK_HOME`` or this Python's pyspark."""
    path = spark_home(given_home) / "bin" / "spark-class"
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
    proc = start_session(argv, log_path, env, cwd=log_path.parent)
    record.write_text(json.dumps({"pid": proc.pid, "log": str(log_path), "argv": argv}))
    say(f"started {' '.join(argv)} (pid {proc.pid}, log {log_path})")
    return proc


def stop(proc: subprocess.Popen, grace: float = DAEMON_GRACE) -> None:
    """End the daemon's process group (SIGTERM, then SIGKILL) and collect it."""
    end_process(proc, group=True, grace=grace)


def default_memory(cores: int | None = None, total_mib: int | None = None) -> str:
    """The worker's memory for executors: the heaps of the executors that fit this node
    (:func:`executor_sizing.size_executors` of its cores and RAM, default this node's).
    A standalone worker counts heaps only: the rest stays free for the OS, the worker
    itself and the executors' overhead (their Python workers, off-heap)."""
    if total_mib is None:
        try:
            text = Path("/proc/meminfo").read_text()
            total_mib = int(re.search(r"^MemTotal:\s+(\d+) kB", text, re.M).group(1)) // 1024
        except (OSError, AttributeError):
            total_mib = 2048
    size = executor_sizing.size_executors(cores or os.cpu_count() or 1, total_mib)
    return f"{size.worker_memory_mib}m"


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False
