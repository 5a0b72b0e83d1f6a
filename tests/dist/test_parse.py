"""The DAG parses from the MWAA layout alone, for the cloud backends, in a Python that
refuses TensorFlow, Keras, PySpark and the jobs' heavy modules, with only the bundle's
plugins and dags on its path (bundles/parse_dag.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

TASKS = {"validate_params", "find_batch", "create_bucket", "upload_batch", "upload_code",
         "plan_run", "wait_for_cluster_slot", "clear_leftovers", "create_job_flow",
         "add_steps", "wait_for_step", "remove_cluster", "publish_batch",
         "summarize_run"}  # fmt: skip


@pytest.fixture(scope="module")
def parsed(mwaa_home, bundle_python, tmp_path_factory) -> dict[str, dict]:
    """What parse_dag.py reports, per backend, each in a fresh Airflow home."""
    found = {}
    for compute in ("emr", "ec2"):
        home = tmp_path_factory.mktemp(f"airflow-{compute}")
        found[compute] = bundle_python(mwaa_home, home, {"FRUITS_COMPUTE": compute})
    return found


@pytest.mark.parametrize("compute", ["emr", "ec2"])
def test_the_dag_parses_from_the_bundle_alone(parsed, mwaa_home, compute):
    report = parsed[compute]
    assert report["import_errors"] == {}
    assert set(report["dags"]) == {"fruits_pipeline"}
    assert set(report["dags"]["fruits_pipeline"]) >= TASKS
    assert f"compute:{compute}" in report["tags"]["fruits_pipeline"]
    plugins = mwaa_home / "plugins"
    # the bundle's code, not the repository's; the jobs and constraints found beside it
    assert report["fruits"] == str(plugins / "fruits" / "__init__.py")
    assert report["rules"] == str(plugins / "fruits_spark" / "rules.py")
    assert report["jobs_dir"] == str(plugins / "spark_jobs")
    assert report["constraints"] == str(plugins / "constraints.txt")
    # nothing was loaded as an Airflow plugin, nothing failed to load
    assert (report["plugins"], report["plugin_errors"]) == ([], {})
    # nothing reached for a refused module while parsing
    assert report["asked"] == []


def test_the_guard_really_refuses_what_is_installed(parsed):
    """TensorFlow and PySpark are installed in this venv: the guard, not their absence,
    is what stops them in the parse above."""
    assert importlib.util.find_spec("tensorflow") is not None
    assert importlib.util.find_spec("pyspark") is not None
    for report in parsed.values():
        assert report["refused"] == {
            "tensorflow": "tensorflow is refused in this bundle check",
            "pyspark": "pyspark is refused in this bundle check",
        }


def test_the_worker_cannot_import_the_jobs_heavy_modules(mwaa_home, bundle_environ, tmp_path):
    """Without any guard: the bundle's fruits_spark has rules.py only, so the jobs'
    modules (which import TensorFlow) cannot be imported by mistake on a worker."""
    code = (
        "import fruits_spark.rules\n"
        "try:\n    import fruits_spark.inference.models\n"
        "except ModuleNotFoundError as exc:\n    print('missing', exc.name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=bundle_environ(mwaa_home, tmp_path, {}),
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.stdout.strip() == "missing fruits_spark.inference", done.stderr[-2000:]
