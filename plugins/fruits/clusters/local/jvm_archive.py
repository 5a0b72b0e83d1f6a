"""A class-data-sharing archive (Java's AppCDS) of the classes a Spark job loads, made once
per Java and Spark install, so every JVM we start maps them from one file instead of
reading, parsing and verifying thousands of classes out of Spark's jars again.

A short job starts several JVMs (spark-submit's driver, a standalone master and worker),
and most of their start-up is class loading: the measured effect is in
docs/performance.md. The archive is made by running a small job that touches what the
jobs use (SQL, Parquet, Arrow and a pandas UDF, the binary-file source) with
``-XX:ArchiveClassesAtExit``; ``python -m fruits.dev.make_jvm_archive`` (``make jvm-archive``, run
by ``make demo``, ``ui``, ``test`` and ``bench``) makes it if it is missing. Java checks
the archive's JVM build and class path when it maps it and ignores an archive that does
not match, so a stale file costs speed, never correctness; the file's name carries the
Java build and Spark install it was made for.

``FRUITS_JVM_ARCHIVE``: ``off`` (never use one), or the archive's path (default
``~/.cache/fruits-pipeline/jvm/spark-<key>.jsa``). Every checkout and Spark install has
its own key, so the default folder keeps only the ``KEEP`` archives used last (each
~180 MiB): ``make jvm-archive`` marks this install's as used and removes the older ones.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from fruits.clusters.local.spark_install import SparkNotFound, spark_bin

ARCHIVE_ENV = "FRUITS_JVM_ARCHIVE"
# Archives kept in the default folder: a few checkouts side by side (a clone for CI beside
# the working one) each keep theirs instead of rebuilding after one another.
KEEP = 3
# Java's own CDS messages (a mismatched archive is a warning on stdout) stay out of the
# jobs' output, which the tasks parse.
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off -Xshare:auto"

TRAINING_JOB = """
import sys
import pandas as pd
from pyspark.sql import SparkSession, functions as F
from pyspark.sql.functions import pandas_udf

spark = SparkSession.builder.appName("fruits-jvm-archive").getOrCreate()
root = sys.argv[1]
spark.range(200).selectExpr("id", "id % 7 AS k", "CAST(id AS string) AS path") \\
    .write.mode("overwrite").parquet(root + "/p")
df = spark.read.parquet(root + "/p")

@pandas_udf("double")
def half(v: pd.Series) -> pd.Series:
    return v / 2.0

out = df.withColumn("h", half(F.col("id").cast("double"))).groupBy("k").agg(F.sum("h"))
out.coalesce(1).write.mode("overwrite").parquet(root + "/q")
spark.read.format("binaryFile").load(root + "/p").select("path", "length").collect()
spark.read.parquet(root + "/q").collect()
spark.stop()
"""


def _java(environ: Mapping[str, str] = os.environ) -> str | None:
    """The ``java`` the Spark scripts would run with ``environ``: its JAVA_HOME's, or PATH's."""
    home = environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").is_file():
        return str(Path(home, "bin", "java"))
    return shutil.which("java")


@functools.lru_cache(maxsize=8)
def _key(java: str, spark_home: str) -> str:
    """The Java build (``java -version``) and the Spark install (its jars' names, sizes and
    modification times: Java checks those too, so a reinstall at the same path is a new key)."""
    version = subprocess.run(
        [java, "-version"], capture_output=True, text=True, timeout=60
    ).stderr.strip()
    stats = {p.name: p.stat() for p in Path(spark_home, "jars").glob("*.jar")}
    jars = sorted((name, st.st_size, st.st_mtime_ns) for name, st in stats.items())
    # the paths as given too: Java compares the class path's strings with the archive's
    paths = (java, os.path.realpath(java), spark_home, os.path.realpath(spark_home))
    made_of = repr((version, paths, jars))
    return hashlib.sha256(made_of.encode()).hexdigest()[:16]


def archive_path(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Where this install's archive is (or would be); None when disabled or no Java/Spark."""
    value = environ.get(ARCHIVE_ENV, "").strip()
    if value.lower() == "off":
        return None
    if value:
        return Path(value)
    java = _java(environ)
    try:
        spark_home = str(Path(spark_bin("spark-submit")).parents[1])
    except SparkNotFound:
        return None
    if java is None:
        return None
    return default_folder() / f"spark-{_key(java, spark_home)}.jsa"


def default_folder() -> Path:
    return Path.home() / ".cache" / "fruits-pipeline" / "jvm"


def prune(folder: Path, current: Path, keep: int = KEEP) -> list[Path]:
    """Remove the archives of other installs beyond the ``keep`` used last (by modification
    time, which ``main`` refreshes on every use); never ``current``. A JVM that still maps a
    removed file keeps its pages; one started after runs without the archive (slower, not
    wrong) until its checkout's ``make jvm-archive`` makes it again."""
    others = [p for p in folder.glob("spark-*.jsa") if p != current]
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    removed = others[max(0, keep - 1) :]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def java_options(environ: Mapping[str, str] = os.environ) -> str:
    """The JVM options that map the archive, or "" while there is none."""
    path = archive_path(environ)
    if path is None or not path.is_file():
        return ""
    return f"-XX:SharedArchiveFile={path} {QUIET}"


def build(path: Path, env: dict[str, str]) -> None:
    """Run the training job with ``-XX:ArchiveClassesAtExit`` and move the archive into place
    (written under a temporary name first: concurrent builders never leave half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fruits-jvm-archive-") as tmp:
        job = Path(tmp, "training_job.py")
        job.write_text(TRAINING_JOB)
        dumped = Path(tmp, "spark.jsa")
        cmd = [
            spark_bin("spark-submit"), "--master", "local[2]",
            "--conf", "spark.ui.enabled=false",
            "--driver-java-options", f"-XX:ArchiveClassesAtExit={dumped} {QUIET}",
            str(job), str(Path(tmp, "data")),
        ]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not dumped.is_file():
            raise RuntimeError(
                f"the JVM archive could not be made (exit {done.returncode}):\n"
                + done.stderr[-3000:]
            )
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        shutil.move(str(dumped), staged)
        os.replace(staged, path)
