"""Where Spark is on this host: pip's pyspark and its scripts, and free loopback ports for
the daemons. No environment, no Java options: those are :mod:`.sparkenv`'s."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path


class SparkNotFound(RuntimeError):
    """pyspark, or one of its scripts, is not installed here."""


def spark_bin(name: str) -> str:
    """pip's pyspark ships ``bin/spark-class`` and ``bin/spark-submit`` (no sbin scripts)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise SparkNotFound("pyspark is not installed on this Airflow worker")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / name
    if not path.is_file():
        raise SparkNotFound(f"{path} not found")
    return str(path)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
