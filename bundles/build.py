"""``python -m bundles.build [DEST]`` (``make dist``): one bundle per platform, from the
same sources, into ``dist/``.

- ``mwaa/``: ``dags/`` (the DAG and the derived constraints), ``plugins.zip``,
  ``requirements.txt`` in MWAA's format, ``startup.sh`` and the page of instructions.
- ``image/``: a Dockerfile on the official Airflow image with the same files baked in,
  for the official Helm chart or docker compose.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bundles import pins, tree

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MWAA_DAGS = "/usr/local/airflow/dags"  # where MWAA syncs the environment's dags/ folder
VENDORED = "constraints-fruits.txt"  # in dags/: MWAA reads a --constraint file from there
IMAGE_CONSTRAINTS = "constraints.txt"


def build_mwaa(dest: Path) -> Path:
    """``dest/mwaa``: what goes to the environment's bucket (README.md says where)."""
    out = dest / "mwaa"
    shutil.rmtree(out, ignore_errors=True)
    (out / "dags").mkdir(parents=True)
    shutil.copyfile(tree.DAG, out / "dags" / tree.DAG.name)
    (out / "dags" / VENDORED).write_text(pins.constraints_text(pins.worker_constraints()))
    tree.write_zip(tree.plugins_tree(), out / "plugins.zip")
    (out / "requirements.txt").write_text(pins.requirements_text(f"{MWAA_DAGS}/{VENDORED}"))
    for name in ("startup.sh", "README.md"):
        shutil.copyfile(HERE / "mwaa" / name, out / name)
    (out / "startup.sh").chmod(0o755)
    return out


def build_image(dest: Path) -> Path:
    """``dest/image``: a build context with the DAG, the plugins tree and the worker's pins."""
    out = dest / "image"
    shutil.rmtree(out, ignore_errors=True)
    (out / "dags").mkdir(parents=True)
    shutil.copyfile(tree.DAG, out / "dags" / tree.DAG.name)
    tree.write_tree(tree.plugins_tree(), out / "plugins")
    (out / "requirements.txt").write_text(pins.requirements_text(IMAGE_CONSTRAINTS))
    shutil.copyfile(pins.CONSTRAINTS, out / IMAGE_CONSTRAINTS)
    text = (HERE / "image" / "Dockerfile").read_text()
    (out / "Dockerfile").write_text(text.replace("@AIRFLOW_VERSION@", pins.airflow_version()))
    return out


def build(dest: Path) -> dict[str, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    return {"mwaa": build_mwaa(dest), "image": build_image(dest)}


def main(argv: list[str]) -> None:
    dest = Path(argv[0]) if argv else ROOT / "dist"
    for name, folder in build(dest).items():
        files = sorted(p.relative_to(folder).as_posix() for p in folder.iterdir())
        print(f"{name:6} {folder}: {', '.join(files)}")


if __name__ == "__main__":
    main(sys.argv[1:])
