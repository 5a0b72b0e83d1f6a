"""The plugins tree of a bundle, as MWAA unzips ``plugins.zip`` and the image copies it:
``fruits/`` (no dev tools), ``fruits_spark/`` with ``rules.py`` alone (the one job module
the DAG loads when parsed: a worker without TensorFlow must not find the others),
``spark_jobs/`` as data for ``upload_code``, and ``constraints.txt`` beside it
(``fruits.settings`` looks for both beside the ``fruits`` package)."""

from __future__ import annotations

import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
JOBS = ROOT / "spark_jobs"
CONSTRAINTS = ROOT / "constraints.txt"
DAG = ROOT / "dags" / "fruits_pipeline.py"
LEFT_OUT = ("dev",)  # plugins/fruits/dev: make's tools (sample batches, weights, JVM archive)
RULES_ONLY = ("fruits_spark/__init__.py", "fruits_spark/rules.py")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed: the same sources give the same zip, byte for byte
# Airflow execs every .py of the plugins folder as a plugin unless ignored (plugins_manager):
# none of ours is one, and the jobs' modules would import TensorFlow in every process.
AIRFLOWIGNORE = b"""\
# Nothing here is an Airflow plugin: the DAG imports these as packages, and the jobs'
# files are data that upload_code sends to the cluster.
fruits/
fruits_spark/
spark_jobs/
"""


def _shipped(path: Path, base: Path) -> bool:
    parts = path.relative_to(base).parts
    if "__pycache__" in parts or path.suffix == ".pyc" or not path.is_file():
        return False
    return not any(p.startswith(".") and p != ".airflowignore" for p in parts)


def _files(base: Path, prefix: str, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    found = {}
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base)
        if _shipped(path, base) and not (rel.parts and rel.parts[0] in skip):
            found[f"{prefix}/{rel.as_posix()}"] = path.read_bytes()
    return found


def plugins_tree() -> dict[str, bytes]:
    """Name inside the plugins folder -> content, sorted by name."""
    tree = {".airflowignore": AIRFLOWIGNORE}
    tree.update(_files(PLUGINS / "fruits", "fruits", skip=LEFT_OUT))
    tree.update({name: (JOBS / name).read_bytes() for name in RULES_ONLY})
    tree.update(_files(JOBS, "spark_jobs"))
    tree["constraints.txt"] = CONSTRAINTS.read_bytes()
    return dict(sorted(tree.items()))


def write_zip(tree: dict[str, bytes], dest: Path) -> Path:
    """A reproducible zip: sorted names, fixed timestamps and modes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in sorted(tree.items()):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.external_attr = (0o755 if name.endswith(".sh") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return dest


def write_tree(tree: dict[str, bytes], dest: Path) -> Path:
    """The same files as a folder (the image's plugins/)."""
    for name, content in tree.items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        if name.endswith(".sh"):
            path.chmod(0o755)
    return dest
