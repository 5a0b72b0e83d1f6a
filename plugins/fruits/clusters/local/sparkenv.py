"""The one environment every Spark process we start on this host gets (the local cluster,
the jobs' tests, the benchmark), so a fix to it reaches all of them."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from fruits.clusters.local.jvm_archive import java_options
from fruits.env_values import ConfigError

# Drivers (spark-submit) and the local cluster's master and worker compile with C1 only:
# their start-up is code that runs once, and Java's C2 compiler threads, optimizing it,
# take the cores of a small machine from that very start-up. They compute little
# themselves (the CNN runs in Python workers; with a ``local[*]`` master the driver runs
# the tasks too, whose JVM side hands image bytes to Python and writes Parquet).
# Executors keep Java's default (tiered). Measured by `make bench` (its ``tiered-jit``
# variant): docs/performance.md. So does the launcher JVM that Spark's scripts start
# before each of those (``SPARK_LAUNCHER_OPTS``: it only builds the command line; 0.18 s
# against 0.32 s tiered, measured with ``java ... org.apache.spark.launcher.Main``).
JIT_ENV = "FRUITS_JVM_JIT"
JIT_OPTIONS = {"c1": "-XX:TieredStopAtLevel=1", "tiered": ""}


def spark_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of everything the cluster starts: loopback only, this Python, and no
    PYTHONPATH, so the jobs import their package from ``--py-files`` as on EMR."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        TF_CPP_MIN_LOG_LEVEL="2",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra or {})
    jit = jit_options(env)
    if archive := java_options(env):  # Spark's classes mapped from one file (AppCDS)
        # drivers (spark-submit), daemons (master, worker), and the executors that a
        # standalone worker starts for a driver (its conf, as a system property)
        executors = f'-Dspark.executor.extraJavaOptions="{archive}"'
        _add_once(env, "SPARK_SUBMIT_OPTS", archive, f"{archive} {executors}")
        _add_once(env, "SPARK_DAEMON_JAVA_OPTS", archive, archive)
    if jit:
        for name in ("SPARK_SUBMIT_OPTS", "SPARK_DAEMON_JAVA_OPTS", "SPARK_LAUNCHER_OPTS"):
            _add_once(env, name, jit, jit)
    return env


def jit_options(env: Mapping[str, str]) -> str:
    """The drivers', daemons' and launchers' JIT options for ``FRUITS_JVM_JIT``: ``c1`` (the
    default) or ``tiered`` (Java's own, as executors always have)."""
    value = env.get(JIT_ENV, "").strip().lower() or "c1"
    if value not in JIT_OPTIONS:
        raise ConfigError(f"{JIT_ENV}={value!r}: expected one of {sorted(JIT_OPTIONS)}")
    return JIT_OPTIONS[value]


def _add_once(env: dict[str, str], name: str, marker: str, options: str) -> None:
    """Append ``options`` to ``env[name]`` unless it holds ``marker`` already (a process
    we started, starting another, hands its environment over)."""
    if marker not in env.get(name, ""):
        env[name] = " ".join(filter(None, [env.get(name), options]))
