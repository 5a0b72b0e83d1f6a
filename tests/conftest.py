"""Shared fixtures: one local SparkSession for the whole session, sample batches, paths."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPARK_JOBS = ROOT / "spark_jobs"
PLUGINS = ROOT / "plugins"

# Spark's Python workers inherit the JVM's environment, which inherits ours:
# they must import fruits_spark too. Loopback only.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(SPARK_JOBS), str(PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])]
)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("fruits-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample_batch(tmp_path_factory) -> Path:
    """A small clean batch: 6 labels x 4 images, 100x100 JPEGs."""
    from fruits.sample_batch import write_batch

    root = tmp_path_factory.mktemp("batch") / "in"
    write_batch(root, per_label=4)
    return root
