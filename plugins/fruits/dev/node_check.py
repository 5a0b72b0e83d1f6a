"""``make node-check``: what a cluster node gets, tried here. Downloads: not in make test.

1. Stages the nodes' wheels locally for both architectures (``stage_wheels --local-only``).
2. Makes a fresh virtualenv and installs the x86_64 ec2 set into it with ``pip install
   --no-index --find-links`` (as the nodes do), timing the install and measuring the
   venv; the same for the requirement set of an earlier commit (``--baseline``, default:
   the last ``spark_jobs/requirements.txt`` that named TensorFlow), from its own
   downloaded wheels, for comparison.
3. Converts MobileNetV2 (seeded random weights) to a ``.tflite`` with this venv's
   TensorFlow, as ``make stage-weights`` does, and runs featurize on a sample batch with
   ``spark-submit`` of the fresh venv's pyspark (``--model-file``), its Python workers
   the fresh venv's; then checks that ``tensorflow`` is not importable there.

    python -m fruits.dev.node_check [--baseline REV] [--images-per-label 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fruits.dev import stage_wheels
from fruits.settings import PROJECT_ROOT, constraints_file, load_settings
from fruits.storage.wheels import EC2_EXTRAS, NodeWheels, node_wheels, pin_of, pinned

WORK = PROJECT_ROOT / "dist" / "node-check"
JOBS_FILE = "spark_jobs/requirements.txt"


def baseline_rev() -> str:
    """The last commit whose jobs' requirements named TensorFlow (today's nodes' set
    before the LiteRT-only one)."""
    revs = subprocess.run(["git", "log", "--format=%H", "--", JOBS_FILE], cwd=PROJECT_ROOT,
                          check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
    for rev in revs:
        text = subprocess.run(["git", "show", f"{rev}:{JOBS_FILE}"], cwd=PROJECT_ROOT,
                              check=True, capture_output=True, text=True).stdout  # fmt: skip
        lines = (line.split("#", 1)[0].strip().lower() for line in text.splitlines())
        if any(line.startswith("tensorflow") for line in lines):
            return rev
    raise LookupError(f"no commit's {JOBS_FILE} names tensorflow")


def baseline_set(rev: str, jobs_dir: Path) -> NodeWheels:
    """The ec2 set as it was at ``rev``: that commit's jobs' file plus today's extras."""
    text = subprocess.run(["git", "show", f"{rev}:{JOBS_FILE}"], cwd=PROJECT_ROOT, check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write(text)
        f.flush()
        lines = pinned(Path(f.name))
    extras = [pin_of(name, constraints_file(jobs_dir)) for name in EC2_EXTRAS]
    return NodeWheels("ec2", "x86_64", tuple(lines + extras))


def dir_mb(path: Path) -> float:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6
    )


def fresh_venv(
    folder: Path, wheels: Path, lines: Sequence[str], constraints: Path
) -> tuple[float, float]:
    """A new venv in ``folder`` with ``lines`` installed offline from ``wheels``:
    (install seconds, venv MB installed, pip's own files included)."""
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    before = dir_mb(folder)
    start = time.monotonic()
    subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--no-cache-dir", "--no-index", "--find-links", str(wheels),
                    "-c", str(constraints), *lines], check=True)  # fmt: skip
    seconds = time.monotonic() - start
    return seconds, dir_mb(folder) - before


def convert_model(dest: Path, image_size: int) -> Path:
    """MobileNetV2 with seeded random weights as ``<key>.tflite`` + ``<key>.json`` (the
    jobs' converter, this venv's TensorFlow), as the cloud runs read it."""
    sys.path.insert(0, str(load_settings().jobs_dir))
    from fruits_spark.inference import converted

    content, manifest = converted.convert("mobilenetv2", image_size, "random", None, "")
    key = converted.cache_key("mobilenetv2", image_size, "random")
    converted.store(key, content, manifest, dest)
    return dest / f"{key}.tflite"


def featurize(venv: Path, model_file: Path, image_size: int, per_label: int) -> dict:
    """featurize.py through the fresh venv's spark-submit on a sample batch."""
    from fruits.dev.sample_batch import write_batch
    from fruits.storage.code_bundle import build_zip

    jobs = load_settings().jobs_dir
    work = WORK / "featurize"
    shutil.rmtree(work, ignore_errors=True)
    batch = work / "batch"
    write_batch(batch, per_label=per_label, labels=["Banana", "Pêche"])
    zip_path = build_zip(jobs, work / "fruits_spark.zip")
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_HOME")}
    env.update(PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=python, SPARK_LOCAL_IP="127.0.0.1")
    cmd = [str(venv / "bin" / "spark-submit"), "--master", "local[2]", "--py-files",
           str(zip_path), str(jobs / "featurize.py"), "--input", str(batch),
           "--output", str(work / "features"), "--rejected", str(work / "rejected"),
           "--model", "mobilenetv2", "--weights", "random", "--model-file", str(model_file),
           "--image-size", str(image_size)]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"featurize failed in the fresh venv:\n{done.stderr[-4000:]}")
    rows = subprocess.run(
        [python, "-c", "import sys, pyarrow.parquet as pq; "
         "t = pq.read_table(sys.argv[1]); print(t.num_rows, len(t.column('features')[0]))",
         str(work / "features")],
        check=True, capture_output=True, text=True, env=env,
    ).stdout.split()  # fmt: skip
    return {"seconds": round(seconds, 1), "rows": int(rows[0]), "features": int(rows[1])}


def tensorflow_importable(venv: Path) -> bool:
    code = (
        "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('tensorflow') else 1)"
    )
    return subprocess.run([str(venv / "bin" / "python"), "-c", code]).returncode == 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fruits.dev.node_check", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--baseline",
        help="a commit whose requirements to compare (default: the last with TensorFlow)",
    )
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--images-per-label", type=int, default=4)
    args = p.parse_args(argv)
    jobs_dir = load_settings().jobs_dir
    constraints = constraints_file(jobs_dir)
    if stage_wheels.main(["--local-only"]) != 0:
        return 1
    new = node_wheels("ec2", "x86_64", jobs_dir)
    old = baseline_set(args.baseline or baseline_rev(), jobs_dir)
    folders = {}
    for name, wheels in (("nodes", new), ("baseline", old)):
        folders[name] = stage_wheels.download(wheels, stage_wheels.CACHE, constraints)
    results = {}
    for name, wheels in (("nodes", new), ("baseline", old)):
        seconds, mb = fresh_venv(WORK / f"venv-{name}", folders[name], wheels.lines, constraints)
        results[name] = {"install_seconds": round(seconds, 1), "installed_mb": round(mb),
                         "requirements": list(wheels.lines)}  # fmt: skip
        print(f"{name}: {mb:.0f} MB installed in {seconds:.1f} s (offline, from {folders[name]})")
    venv = WORK / "venv-nodes"
    model_file = convert_model(WORK / "model", args.image_size)
    results["featurize"] = featurize(venv, model_file, args.image_size, args.images_per_label)
    results["tensorflow_importable"] = tensorflow_importable(venv)
    (WORK / "results.json").write_text(json.dumps(results, indent=1))
    print(f"featurize in the fresh venv: {results['featurize']}")
    print(f"tensorflow importable in the fresh venv: {results['tensorflow_importable']}")
    n, b = results["nodes"], results["baseline"]
    print(f"nodes' set: {n['installed_mb']} MB, {n['install_seconds']} s; with TensorFlow "
          f"({old.lines[0]}...): {b['installed_mb']} MB, {b['install_seconds']} s")  # fmt: skip
    return 1 if results["tensorflow_importable"] else 0


if __name__ == "__main__":
    sys.exit(main())
