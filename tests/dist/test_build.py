"""What ``make dist`` lays out, file by file: MWAA's dags/, plugins.zip, requirements.txt
and startup.sh, and the image's build context, all from the same sources."""

from __future__ import annotations

import json
import re
import subprocess
import zipfile
from pathlib import Path

from dag_support import ROOT

from bundles import pins
from bundles.build import build
from fruits.settings import load_settings

HEAVY = ("apache-airflow", "tensorflow", "tensorflow-cpu", "keras", "pyspark", "ai-edge-litert")
CHECKOV = ROOT / ".venv-tools" / "bin" / "checkov"


def zipped(dist: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(dist / "mwaa" / "plugins.zip") as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_plugins_zip_holds_the_airflow_side_the_rules_and_the_jobs_as_data(dist):
    files = zipped(dist)
    names = set(files)
    assert {"fruits/settings.py", "fruits/tasks.py", "fruits/clusters/emr/job_flow.json",
            "fruits/clusters/emr/bootstrap.sh", "fruits/.airflowignore"} <= names  # fmt: skip
    assert not any(n.startswith("fruits/dev/") or "__pycache__" in n for n in names)
    # the one job module the DAG loads when parsed; the heavy ones are not importable
    assert {n for n in names if n.startswith("fruits_spark/")} == {
        "fruits_spark/__init__.py", "fruits_spark/rules.py"
    }  # fmt: skip
    rules = ROOT / "spark_jobs" / "fruits_spark" / "rules.py"
    assert files["fruits_spark/rules.py"] == rules.read_bytes()
    # the whole jobs' folder, as data for upload_code, and the project's constraints beside it
    jobs = sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "spark_jobs").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert sorted(n for n in names if n.startswith("spark_jobs/")) == jobs
    assert "spark_jobs/fruits_spark/inference/models.py" in names
    assert files["constraints.txt"] == (ROOT / "constraints.txt").read_bytes()
    # Airflow would exec every .py of the plugins folder as a plugin otherwise
    ignored = files[".airflowignore"].decode().split()
    assert {"fruits/", "fruits_spark/", "spark_jobs/"} <= set(ignored)


def test_the_zip_is_reproducible(dist, tmp_path):
    build(tmp_path)
    again = (tmp_path / "mwaa" / "plugins.zip").read_bytes()
    assert again == (dist / "mwaa" / "plugins.zip").read_bytes()
    with zipfile.ZipFile(dist / "mwaa" / "plugins.zip") as zf:
        infos = zf.infolist()
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)


def test_the_dag_folder_holds_the_dag_and_the_constraints_only(dist):
    dags = dist / "mwaa" / "dags"
    assert sorted(p.name for p in dags.iterdir()) == [
        "constraints-fruits.txt", "fruits_pipeline.py"
    ]  # fmt: skip
    dag = (dags / "fruits_pipeline.py").read_bytes()
    assert dag == (ROOT / "dags" / "fruits_pipeline.py").read_bytes()


def test_requirements_are_in_mwaas_format_with_the_vendored_constraints(dist):
    lines = [
        line
        for line in (dist / "mwaa" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == '--constraint "/usr/local/airflow/dags/constraints-fruits.txt"'
    wanted = pins.read_pins(dist / "mwaa" / "requirements.txt")
    assert wanted == pins.read_pins(ROOT / "requirements" / "airflow-worker.txt")
    assert set(wanted) == {"apache-airflow-providers-amazon", "pyarrow"}
    assert not set(wanted) & set(HEAVY)


def test_the_vendored_constraints_pin_what_the_worker_pulls_in_and_not_airflow(dist):
    vendored = pins.read_pins(dist / "mwaa" / "dags" / "constraints-fruits.txt")
    locked = pins.read_pins(ROOT / "constraints.txt")
    assert {n: locked[n] for n in vendored} == vendored
    assert set(pins.read_pins(ROOT / "requirements" / "airflow-worker.txt")) <= set(vendored)
    # the provider's own dependencies, and the providers it needs
    assert {"boto3", "botocore", "apache-airflow-providers-common-compat"} <= set(vendored)
    # MWAA keeps its Airflow and Airflow's libraries; nothing of the jobs' stack
    assert not set(vendored) & {*pins.AIRFLOW_DISTS, "sqlalchemy", "pydantic", "fastapi"}
    assert not set(vendored) & set(HEAVY)


def test_startup_exports_settings_the_pipeline_reads(dist):
    done = subprocess.run(
        ["bash", "-c", 'source "$0" && env -0', str(dist / "mwaa" / "startup.sh")],
        env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    env = dict(item.split("=", 1) for item in done.stdout.split("\0") if "=" in item)
    exported = {k: v for k, v in env.items() if k.startswith("FRUITS_")}
    assert exported["FRUITS_COMPUTE"] == "emr"
    assert exported["FRUITS_INCOMING"].startswith("s3://")
    documented = (ROOT / "docs" / "configuration.md").read_text()
    assert all(f"`{name}`" in documented for name in exported), exported
    settings = load_settings(exported)
    assert (settings.compute, settings.incoming) == ("emr", exported["FRUITS_INCOMING"])
    assert settings.weights == "imagenet"  # staged in the bucket (make stage-weights)
    # a value the environment already has wins
    done = subprocess.run(
        ["bash", "-c", 'source "$0" && echo "$FRUITS_COMPUTE"', str(dist / "mwaa" / "startup.sh")],
        env={"PATH": "/usr/bin:/bin", "FRUITS_COMPUTE": "ec2"}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.stdout.strip() == "ec2"


def test_the_image_bakes_in_the_same_tree_on_the_pinned_airflow(dist):
    image = dist / "image"
    baked = {
        p.relative_to(image / "plugins").as_posix(): p.read_bytes()
        for p in (image / "plugins").rglob("*")
        if p.is_file()
    }
    assert baked == zipped(dist)
    assert sorted(p.name for p in (image / "dags").iterdir()) == ["fruits_pipeline.py"]
    dockerfile = (image / "Dockerfile").read_text()
    version = pins.airflow_version()
    assert re.search(rf"^FROM apache/airflow:{re.escape(version)}-python3\.11$", dockerfile, re.M)
    install = re.search(r"^RUN pip install .*?(?<!\\)$", dockerfile, re.M | re.S)
    assert install, dockerfile
    assert f'"apache-airflow=={version}"' in install.group(0)
    assert "-r /opt/fruits/requirements.txt -c /opt/fruits/constraints.txt" in install.group(0)
    assert "COPY --chown=airflow:root dags/ /opt/airflow/dags/" in dockerfile
    assert "COPY --chown=airflow:root plugins/ /opt/airflow/plugins/" in dockerfile
    assert "ENV FRUITS_COMPUTE=emr" in dockerfile
    # the image's requirements: the same pins, with the project's constraints beside them
    requirements = (image / "requirements.txt").read_text()
    assert '--constraint "constraints.txt"' in requirements
    assert pins.read_pins(image / "requirements.txt") == pins.read_pins(
        dist / "mwaa" / "requirements.txt"
    )
    assert (image / "constraints.txt").read_bytes() == (ROOT / "constraints.txt").read_bytes()


def test_checkov_passes_the_image_dockerfile(dist):
    """The image cannot be built here (no Docker daemon): a scanner is what checks it."""
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run `make tools` (or `make test`)"
    done = subprocess.run(
        [str(CHECKOV), "-f", str(dist / "image" / "Dockerfile"), "--framework", "dockerfile",
         "-o", "json", "--skip-download"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    (report,) = report if isinstance(report, list) else [report]
    results = report["results"]
    assert [c["check_id"] for c in results["failed_checks"]] == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] >= 5, report["summary"]
    # the one skip: no single HEALTHCHECK fits every Airflow component (said in the file)
    assert [c["check_id"] for c in results["skipped_checks"]] == ["CKV_DOCKER_2"]
