"""Dependencies split by where they run: the jobs' (every cluster node), Airflow's (the
image), the slim worker's (an Airflow that brings itself: make dist's bundles),
development's (tests, linters); pinned, locked together, each installed only where it
runs."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

from fruits.storage import code_bundle as jobcode

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "spark_jobs" / "requirements.txt"
AIRFLOW = ROOT / "requirements" / "airflow.txt"
WORKER = ROOT / "requirements" / "airflow-worker.txt"
DEV = ROOT / "requirements" / "dev.txt"
CONVERT = ROOT / "requirements" / "convert.txt"  # TensorFlow: the converter, never the nodes
PIN = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]+\])?==(\S+)$")
DEV_TOOLS = ("pytest", "moto", "ruff", "cfn-lint", "playwright", "scikit-learn", "checkov")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path, *, follow: bool = True) -> dict[str, str]:
    """name -> version of a requirements file, with its ``-r`` includes if ``follow``."""
    found: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            if follow:
                found.update(pins((path.parent / line[3:].strip()).resolve()))
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: {line!r} is not pinned with =="
        found[norm(match.group(1))] = match.group(3)
    return found


def test_every_pin_is_locked_and_installed():
    locked = pins(ROOT / "constraints.txt")
    for path in (JOBS, AIRFLOW, WORKER, DEV, CONVERT):
        for name, version in pins(path, follow=False).items():
            assert locked.get(name) == version, f"{path.name}: {name}=={version} vs constraints"
            assert importlib.metadata.version(name) == version, f"{name} installed differs"


def test_each_layer_holds_only_what_runs_there():
    jobs, airflow, dev = pins(JOBS), pins(AIRFLOW), pins(DEV)
    assert set(jobs) <= set(airflow) <= set(dev)
    assert "pyspark" not in jobs  # EMR brings its own Spark
    # the nodes run a converted model: the converter is the dev install's and the local
    # backend's (airflow.txt includes it), never the nodes'
    assert not set(jobs) & {"tensorflow", "tensorflow-cpu", "keras", "h5py"}
    assert {"tensorflow-cpu", "keras", "h5py"} <= set(pins(CONVERT)) <= set(airflow)
    assert {"apache-airflow", "pyspark"} <= set(airflow)
    for tool in DEV_TOOLS:
        assert tool not in airflow, f"{tool} would ship in the Airflow image"
    assert {"pytest", "moto", "ruff"} <= set(dev)


def test_the_worker_file_is_airflows_without_airflow_and_the_jobs_stack():
    """What make dist's bundles install beside a platform's own Airflow: a subset of
    airflow.txt at the same versions, and nothing that runs the jobs."""
    worker, airflow, jobs = pins(WORKER), pins(AIRFLOW), pins(JOBS)
    assert worker.items() <= airflow.items()
    assert "apache-airflow-providers-amazon" in worker
    assert not set(worker) & {"apache-airflow", "pyspark", "psutil", *DEV_TOOLS}
    assert not set(worker) & (set(jobs) - {"pyarrow"})  # pyarrow: publish reads footers


def _third_party_imports(folder: Path, skip: tuple[str, ...] = ()) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        if any(part in skip for part in path.relative_to(folder).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    local = {p.stem for p in folder.glob("*.py")} | {"fruits_spark"}
    return {n for n in names if n not in sys.stdlib_module_names and n not in local}


def test_the_worker_file_covers_what_the_cloud_backends_import_on_airflow():
    """The Airflow side of emr and ec2 (plugins/fruits without the local backend, the
    dev tools and the ec2 nodes' own program) imports only Airflow, the worker file's
    packages and what they pull in."""
    from bundles.pins import AIRFLOW_DISTS, closure

    owners = importlib.metadata.packages_distributions()
    provided = closure([*AIRFLOW_DISTS, *pins(WORKER)])
    imported = _third_party_imports(ROOT / "plugins" / "fruits", skip=("local", "dev", "node"))
    assert {"airflow", "pyarrow"} <= imported
    for module in imported - {"fruits"}:
        dists = owners.get(module, [])
        assert any(norm(d) in provided for d in dists), f"plugins import {module} ({dists})"


def test_the_jobs_file_covers_what_the_jobs_import():
    """A node installs only spark_jobs/requirements.txt (and Spark): every package the
    jobs import must come from it, except the converter's (TensorFlow, Keras, and
    scikit-image for int8's calibration photographs), which only a featurize without
    --model-file imports (the local backend, or --runtime keras);
    tests/spark_jobs/test_featurize_without_tensorflow.py runs the nodes' path with
    them refused."""
    owners = importlib.metadata.packages_distributions()
    wanted, converter = pins(JOBS), pins(CONVERT)
    imported = _third_party_imports(ROOT / "spark_jobs")
    assert {"numpy", "pyarrow", "pyspark", "PIL"} <= imported
    for module in imported - {"pyspark"}:  # the cluster's own Spark
        dists = owners.get(module, [])
        if module in {"tensorflow", "keras", "skimage"}:
            assert any(norm(d) in converter for d in dists), f"{module} ({dists})"
            continue
        assert any(norm(d) in wanted for d in dists), f"spark_jobs imports {module} ({dists})"


def test_the_nodes_get_the_jobs_file(tmp_path):
    emr, ec2 = tmp_path / "emr.txt", tmp_path / "ec2.txt"
    emr.write_text(jobcode.job_requirements(ROOT / "spark_jobs"))
    ec2.write_text(jobcode.node_requirements(ROOT / "spark_jobs"))
    locked = pins(ROOT / "constraints.txt")
    assert pins(emr) == pins(JOBS)
    # the versions of the pins, whatever the Airflow worker has installed (no pyspark on
    # the workers of the cloud backends)
    assert pins(ec2) == {**pins(JOBS), "pyspark": locked["pyspark"], "boto3": locked["boto3"]}


def test_the_image_installs_airflows_file_only():
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip install [^\n]*-r (\S+)", dockerfile)
    assert installs == ["/opt/fruits/requirements/airflow.txt"]
    # each -r include resolves inside the image as it does in the repository
    for raw in AIRFLOW.read_text().splitlines():
        if raw.startswith("-r "):
            target = (AIRFLOW.parent / raw[3:]).resolve().relative_to(ROOT)
            copied = re.search(rf"^COPY \S* ?{re.escape(str(target))} /opt/fruits/(\S+)$",
                               dockerfile, re.M)  # fmt: skip
            assert copied and copied.group(1).rstrip("/") == str(target.parent), target
