"""Tests of ``make dist``'s bundles: built once per session into a temporary folder, laid
out as MWAA lays them out, and run in subprocesses that see only the bundle (never the
repository's plugins/ or spark_jobs/). Airflow and AWS fixtures from tests/support."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from airflow_fixtures import *  # noqa: F403
from dag_support import ROOT
from model_fixtures import *  # noqa: F403  (the converted model, staged on moto)
from wheel_fixtures import *  # noqa: F403  (the nodes' wheels, staged on moto)

from bundles.build import build

PARSE_DAG = ROOT / "bundles" / "parse_dag.py"
MARK = "BUNDLE-CHECK "


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> Path:
    """``make dist``'s output, built from the working copy."""
    dest = tmp_path_factory.mktemp("dist")
    build(dest)
    return dest


@pytest.fixture(scope="session")
def mwaa_home(dist, tmp_path_factory) -> Path:
    """An Airflow home as MWAA makes it: the bundle's dags/ and plugins.zip unzipped as
    plugins/."""
    home = tmp_path_factory.mktemp("mwaa-home")
    (home / "dags").mkdir()
    for path in (dist / "mwaa" / "dags").iterdir():
        (home / "dags" / path.name).write_bytes(path.read_bytes())
    with zipfile.ZipFile(dist / "mwaa" / "plugins.zip") as zf:
        zf.extractall(home / "plugins")
    return home


def bundle_env(home: Path, airflow_home: Path, settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without the project's paths and settings: PYTHONPATH
    the bundle's plugins and dags only, Airflow's folders the bundle's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FRUITS_", "PYTHON", "AIRFLOW__CORE__DAGS", "AIRFLOW__CORE__PLUG"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(home / "plugins"), str(home / "dags")]),
        AIRFLOW_HOME=str(airflow_home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(home / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        **settings,
    )
    return env


@pytest.fixture(scope="session")
def bundle_environ() -> Callable[[Path, Path, dict[str, str]], dict[str, str]]:
    """:func:`bundle_env`, for tests that start their own subprocess."""
    return bundle_env


@pytest.fixture(scope="session")
def bundle_python() -> Callable[..., dict]:
    """``bundle_python(home, airflow_home, settings, *args)``: bundles/parse_dag.py in a
    subprocess (its import guard on), returning what it printed."""

    def run(home: Path, airflow_home: Path, settings: dict[str, str], *args: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-c", PARSE_DAG.read_text(), str(home / "dags"),
             str(home / "plugins"), *args],
            env=bundle_env(home, airflow_home, settings), cwd=airflow_home,
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
        assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
        return json.loads(lines[-1][len(MARK) :])

    return run
