"""``python -m bundles.check [DIST]`` (``make dist-check``): install the MWAA bundle the way
an environment would, in a fresh virtualenv, and parse the DAG there.

The virtualenv (``DIST/check/venv``) gets the pinned Airflow and the bundle's
``requirements.txt`` (its ``--constraint`` line pointed at the bundle's own ``dags/``
copy, as MWAA reads it from ``/usr/local/airflow/dags``), with the project's constraints.
The DAG is then parsed for ``emr`` and ``ec2`` from an MWAA-like home (``dags/`` and the
unzipped ``plugins.zip``) by ``bundles/parse_dag.py``. Prints the installed size against
the same packages of ``requirements/airflow.txt`` as installed in this (full) venv.
Downloads packages: not part of ``make test``."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

from bundles import pins
from bundles.build import MWAA_DAGS

ROOT = Path(__file__).resolve().parents[1]
PARSE_DAG = ROOT / "bundles" / "parse_dag.py"
MB = 1024 * 1024


def mwaa_home(dist: Path, home: Path) -> Path:
    """``dags/`` and the unzipped ``plugins.zip``, as MWAA lays them out."""
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(dist / "mwaa" / "dags", home / "dags")
    with zipfile.ZipFile(dist / "mwaa" / "plugins.zip") as zf:
        zf.extractall(home / "plugins")
    return home


def install(dist: Path, env_dir: Path, home: Path) -> Path:
    """A fresh virtualenv with Airflow and the bundle's requirements; its python."""
    shutil.rmtree(env_dir, ignore_errors=True)
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    requirements = env_dir.parent / "requirements.txt"
    text = (dist / "mwaa" / "requirements.txt").read_text()
    requirements.write_text(text.replace(MWAA_DAGS, str(home / "dags")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, env=env)
    subprocess.run(
        [*pip, f"apache-airflow=={pins.airflow_version()}", "-r", str(requirements),
         "-c", str(pins.CONSTRAINTS)],
        check=True, env=env,
    )  # fmt: skip
    return python


def parse(python: Path, home: Path, compute: str) -> dict:
    """parse_dag.py's report, in the check venv, PYTHONPATH the bundle's folders only."""
    airflow_home = home.parent / f"airflow-{compute}"
    airflow_home.mkdir(exist_ok=True)
    env = {
        "PATH": f"{python.parent}:/usr/bin:/bin",
        "HOME": str(airflow_home),
        "PYTHONPATH": f"{home / 'plugins'}:{home / 'dags'}",
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "FRUITS_COMPUTE": compute,
    }
    done = subprocess.run(
        [str(python), "-c", PARSE_DAG.read_text(), str(home / "dags"), str(home / "plugins")],
        env=env, cwd=airflow_home, capture_output=True, text=True,
    )  # fmt: skip
    lines = [x for x in done.stdout.splitlines() if x.startswith("BUNDLE-CHECK ")]
    if done.returncode or not lines:
        raise SystemExit(f"parse failed ({compute}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return json.loads(lines[-1].split(" ", 1)[1])


def du_mb(folder: Path) -> tuple[float, float]:
    """(``du -sm``, the files' own bytes) of ``folder``, in MiB: on disk, and as a sum of
    file sizes (what the RECORD sums below count)."""
    disk = subprocess.run(["du", "-sm", str(folder)], capture_output=True, text=True, check=True)
    files = (p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return float(disk.stdout.split()[0]), sum(p.stat().st_size for p in files) / MB


def requirement_names(path: Path) -> list[str]:
    """The pinned names of a requirements file and its ``-r`` includes."""
    names = list(pins.read_pins(path))
    for raw in path.read_text().splitlines():
        if raw.startswith("-r "):
            names += requirement_names((path.parent / raw[3:].strip()).resolve())
    return names


def installed_mb(names: list[str]) -> float:
    """What the distributions ``names`` pull in occupy as installed here (their RECORDs)."""
    total = 0
    for name in sorted(pins.closure(names)):
        for f in importlib.metadata.distribution(name).files or []:
            path = Path(f.locate())
            total += path.stat().st_size if path.is_file() else 0
    return total / MB


def main(argv: list[str]) -> None:
    dist = Path(argv[0] if argv else ROOT / "dist").resolve()
    work = dist / "check"
    work.mkdir(parents=True, exist_ok=True)
    home = mwaa_home(dist, work / "home")
    python = install(dist, work / "venv", home)
    for compute in ("emr", "ec2"):
        report = parse(python, home, compute)
        tasks = report["dags"].get("fruits_pipeline", [])
        if report["import_errors"] or not tasks or report["plugin_errors"]:
            raise SystemExit(f"{compute}: {json.dumps(report, indent=1)}")
        print(f"{compute}: fruits_pipeline parsed, {len(tasks)} tasks, no import errors")
    (site,) = (work / "venv" / "lib").glob("python3*/site-packages")
    disk, files = du_mb(site)
    full = installed_mb(requirement_names(pins.AIRFLOW))
    print(f"installed: {disk:,.0f} MiB on disk (du -sm), {files:,.0f} MiB of files, in {site}")
    print("           (Airflow + the bundle's requirements.txt)")
    print(f"against:   {full:,.0f} MiB of files for requirements/airflow.txt's packages, as")
    print(f"           installed in {sys.prefix} (their RECORDs, dependencies included)")


if __name__ == "__main__":
    main(sys.argv[1:])
