"""Shared fixtures (one local SparkSession for the whole session, sample batches) and the
test tiers: each test is marked from the costly things it uses, so that ``make check``
(``-m fast``) runs everything that needs no Spark, no Airflow database, no spark-submit,
no cluster processes and no browser, and ``make test`` runs every test."""

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


# What a fixture costs -> the marker of every test that uses it (directly or through
# other fixtures). Tests that use none of them are the fast tier.
FIXTURE_TIERS = {
    "spark": "spark",  # a SparkSession in this process (a JVM, Python workers)
    "airflow_db": "airflow",  # Airflow's metadata database: DAG runs, `airflow` commands
    "py_files": "spark_submit",  # the jobs' zip for spark-submit processes
    "cluster": "cluster",  # Spark master and worker processes (tests/plugins/test_ec2_node.py)
    "processes": "cluster",
    "ui": "browser",  # Airflow's API server and Chromium
}
HEAVY = ("slow", "memory", *sorted(set(FIXTURE_TIERS.values())))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, tier in FIXTURE_TIERS.items():
            if fixture in used:
                item.add_marker(tier)
        if not any(item.get_closest_marker(name) for name in HEAVY):
            item.add_marker("fast")


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """The tests' own converted-model cache (fruits_spark.converted): shared by every job
    and pipeline run of the session, never the user's."""
    folder = tmp_path_factory.mktemp("model-cache")
    os.environ["FRUITS_MODEL_CACHE"] = str(folder)
    return folder


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
