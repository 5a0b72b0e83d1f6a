"""The layout stays one a newcomer can walk: no import cycle, small packages, one folder
per backend with the same interface, and tests that mirror the code."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dag_support import ROOT

from fruits.settings import COMPUTE_BACKENDS

# Where our Python lives, and the package name its files import each other by.
SOURCES = {
    ROOT / "plugins": "",
    ROOT / "spark_jobs": "",
    ROOT / "dags": "",
    ROOT: "bench",  # bench/ is imported as the ``bench`` package from the root
}
MAX_MODULES_PER_PACKAGE = 15


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of plugins/, spark_jobs/, dags/ and bench/."""
    found: dict[str, Path] = {}
    for base, only in SOURCES.items():
        root = base / only if only else base
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            if parts and not any(p.startswith(".") for p in parts):
                found.setdefault(".".join(parts), path)
    return found


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The known modules ``path`` imports, anywhere in it (a lazy import inside a function
    still makes a cycle: it only moves the failure from import time to call time)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            # `from a.b import c`: the module a.b.c if there is one, else a.b itself
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(path, name, known) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "x.py").write_text("def f():\n    from p.y import g\n")
    (pkg / "y.py").write_text("from . import x\n")
    known = {"p", "p.x", "p.y"}
    assert imports_of(pkg / "x.py", "p.x", known) == {"p.y"}
    assert imports_of(pkg / "y.py", "p.y", known) == {"p", "p.x"}


def test_no_import_cycle():
    graph = import_graph()
    assert "fruits.clusters.local.sparkenv" in graph and "bench.run" in graph
    assert cycles(graph) == []


def test_no_package_holds_more_than_15_modules():
    crowded = {}
    for base in (ROOT / "plugins" / "fruits", ROOT / "spark_jobs" / "fruits_spark", ROOT / "bench"):
        for folder in [base, *(p for p in base.rglob("*") if p.is_dir())]:
            modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
            if len(modules) > MAX_MODULES_PER_PACKAGE:
                crowded[str(folder.relative_to(ROOT))] = len(modules)
    assert crowded == {}


@pytest.mark.parametrize("compute", COMPUTE_BACKENDS)
def test_each_backend_is_one_folder_with_the_backend_interface(compute):
    from fruits.clusters import Backend, backend

    folder = ROOT / "plugins" / "fruits" / "clusters" / compute
    assert (folder / "__init__.py").is_file()
    module = backend(compute)
    assert Path(module.__file__).parent == folder
    members = [n for n in vars(Backend) if not n.startswith("_")] + ["REMOTE"]
    for member in members:
        assert hasattr(module, member), f"{compute} lacks {member}"
    assert isinstance(module.REMOTE, bool)


def test_a_backend_package_outside_the_list_is_refused():
    from fruits.clusters import backend
    from fruits.settings import ConfigError

    with pytest.raises(ConfigError, match="no cluster backend 'common'"):
        backend("common")  # a folder of clusters/, but no backend


def test_test_files_mirror_modules_of_the_code():
    """Every test file of tests/plugins and tests/spark_jobs sits at the path of the code it
    tests: tests/<path>/test_<module>.py for <path>/<module>.py, or
    test_<module>_<aspect>.py for one aspect of it."""
    orphans = []
    for tree in ("plugins", "spark_jobs"):
        for test in sorted((ROOT / "tests" / tree).rglob("test_*.py")):
            rel = test.relative_to(ROOT / "tests")
            # test_<module>.py, or test_<module>_<aspect>.py for one aspect of a big module
            words = rel.stem.removeprefix("test_").split("_")
            names = ["_".join(words[:n]) + ".py" for n in range(len(words), 0, -1)]
            if not any((ROOT / rel.parent / name).is_file() for name in names):
                orphans.append(str(rel))
    assert orphans == []


def test_every_backend_module_imports():
    for compute in COMPUTE_BACKENDS:
        importlib.import_module(f"fruits.clusters.{compute}")


def test_importing_a_backend_package_does_not_import_airflow():
    """The bench and the dev tools import backend modules (``local.sparkenv``); Airflow
    comes only with ``cluster_tasks``, and a test session that imported it that early
    would configure it before its fixtures set AIRFLOW_HOME."""
    modules = [f"fruits.clusters.{name}" for name in COMPUTE_BACKENDS]
    modules += ["fruits.clusters.local.sparkenv", "fruits.clusters.emr.job_flow", "bench.launch"]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('airflow' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        str(ROOT / p) for p in (".", "plugins", "spark_jobs"))}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
