"""What a bundle installs beside an Airflow it does not bring: the worker's requirements
(``requirements/airflow-worker.txt``) and a constraints file derived from ours.

The derived file pins what those requirements pull in, at the versions of
``constraints.txt``, but not Airflow nor the libraries Airflow itself depends on: MWAA
fixes its own Airflow (its install refuses another version), and pinning Airflow's
libraries would move them under it. Airflow's providers stay pinned: the Amazon provider
needs recent ones."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "requirements" / "airflow-worker.txt"
AIRFLOW = ROOT / "requirements" / "airflow.txt"
CONSTRAINTS = ROOT / "constraints.txt"
AIRFLOW_DISTS = ("apache-airflow", "apache-airflow-core", "apache-airflow-task-sdk")
PROVIDER = "apache-airflow-providers-"
INSTALLERS = ("pip", "setuptools", "wheel")  # never in constraints.txt (pip freeze's rule)
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)$")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """name -> version of the ``name==version`` lines (comments, blanks and options left out)."""
    found = {}
    for raw in path.read_text().splitlines():
        match = PIN.match(raw.split("#", 1)[0].strip())
        if match:
            found[norm(match.group(1))] = match.group(2)
    return found


def airflow_version() -> str:
    return read_pins(AIRFLOW)["apache-airflow"]


def _requires(name: str, extras: Iterable[str]) -> list[Requirement]:
    """The distribution's dependencies that apply here, with the extras asked for."""
    wanted = []
    for text in importlib.metadata.distribution(name).requires or []:
        req = Requirement(text)
        envs = [{"extra": e} for e in ("", *extras)]
        if req.marker is None or any(req.marker.evaluate(env) for env in envs):
            wanted.append(req)
    return wanted


def closure(names: Iterable[str], stop: Iterable[str] = ()) -> set[str]:
    """Every distribution ``names`` depend on (themselves included), from the metadata of
    what is installed here (the pinned venv); ``stop`` are kept, not entered."""
    stop = {norm(s) for s in stop}
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(norm(n), ()) for n in names]
    while todo:
        name, extras = todo.pop()
        if name in seen and not extras:
            continue
        seen.add(name)
        if name in stop:
            continue
        todo += [(norm(r.name), tuple(r.extras)) for r in _requires(name, extras)]
    return seen


def worker_constraints() -> dict[str, str]:
    """name -> pinned version for the worker's derived constraints file."""
    locked = read_pins(CONSTRAINTS)
    airflows_own = closure(AIRFLOW_DISTS)
    pulled = closure(read_pins(WORKER), stop=AIRFLOW_DISTS)
    keep = sorted(
        n
        for n in pulled
        if n not in (*AIRFLOW_DISTS, *INSTALLERS)
        and (n not in airflows_own or n.startswith(PROVIDER))
    )
    missing = [n for n in keep if n not in locked]
    if missing:
        raise ValueError(f"not in constraints.txt: {', '.join(missing)}")
    return {n: locked[n] for n in keep}


def constraints_text(pins: dict[str, str]) -> str:
    head = [
        "# fruits-pipeline: what requirements.txt pulls in, pinned as in the project's",
        "# constraints.txt (make dist). Airflow and its own libraries are left to the",
        "# platform's Airflow.",
    ]
    return "\n".join([*head, *(f"{n}=={v}" for n, v in pins.items())]) + "\n"


def requirements_text(constraint_path: str) -> str:
    """MWAA's requirements.txt: the constraint line, then the worker's own pins."""
    lines = [
        "# fruits-pipeline: what Airflow workers add for the emr and ec2 backends",
        "# (requirements/airflow-worker.txt); never Airflow, TensorFlow or PySpark.",
        f'--constraint "{constraint_path}"',
    ]
    lines += [f"{n}=={v}" for n, v in read_pins(WORKER).items()]
    return "\n".join(lines) + "\n"
