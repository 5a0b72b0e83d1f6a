"""Shared fixtures (one local SparkSession for the whole session, sample batches) and the
test tiers: each test is marked from the costly things it uses, so that ``make check``
(``-m fast``) runs everything that needs no Spark, no Airflow database, no spark-submit,
no cluster processes and no browser, and ``make test`` runs every test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Airflow reads AIRFLOW_HOME once, when first imported: set the tests' environment before
# any test module (bench/ tests import code that may import Airflow) is collected.
import airflow_fixtures  # noqa: E402, F401
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
    "cluster": "cluster",  # Spark master and worker processes (the ec2 node program's tests)
    "processes": "cluster",
    "ui": "browser",  # Airflow's API server and Chromium
}
COSTLY = set(FIXTURE_TIERS.values())  # a JVM, a database, processes or a browser
HEAVY = ("slow", "memory", *sorted(COSTLY))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, tier in FIXTURE_TIERS.items():
            if fixture in used:
                item.add_marker(tier)
        if not any(item.get_closest_marker(name) for name in HEAVY):
            item.add_marker("fast")
    items[:] = heaviest_files_first(items)


def heaviest_files_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """Files with end-to-end, browser or memory tests first, then those that start Spark
    processes, then the rest; the order within a file is kept. ``make test`` hands whole
    files to two workers (``--dist loadfile``) in this order, so the longest files start
    at once and the short ones fill the gaps, instead of one long file ending the run."""
    rank: dict[Path, int] = {}
    for item in items:
        marks = {m.name for m in item.iter_markers()}
        own = 0 if marks & {"slow", "browser", "memory"} else 1 if marks & COSTLY else 2
        rank[item.path] = min(rank.get(item.path, 2), own)
    return sorted(items, key=lambda item: rank[item.path])


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """The tests' own converted-model cache (fruits_spark.inference.converted): shared by every job
    and pipeline run of the session, and by the session's xdist workers (one folder
    above theirs; entries are written under a temporary name and renamed), never the
    user's."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "model-cache"
    folder.mkdir(exist_ok=True)
    os.environ["FRUITS_MODEL_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    from fruits.clusters.local.sparkenv import spark_env

    # this process's JVM maps Spark's classes from the archive too
    # (fruits.clusters.local.jvm_archive)
    os.environ["SPARK_SUBMIT_OPTS"] = spark_env().get("SPARK_SUBMIT_OPTS", "")

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
    from fruits.dev.sample_batch import write_batch

    root = tmp_path_factory.mktemp("batch") / "in"
    write_batch(root, per_label=4)
    return root
