"""The job code a cluster runs: ``fruits_spark.zip`` (for ``--py-files``), the two entry
points, the EMR bootstrap script and the job requirements (plus what a backend's nodes
need besides, such as the ``ec2`` nodes' program), versioned by content.

``s3://<bucket>/code/<version>/`` where ``<version>`` is a hash of those files, so
the same code is uploaded once and a new version never changes files under a
running cluster.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruits.settings import Settings, load_settings
from fruits.storage.wheels import EC2_EXTRAS, node_set

JOB_SCRIPTS = ("featurize.py", "reduce.py")
PACKAGE = "fruits_spark"
ZIP_NAME = f"{PACKAGE}.zip"
REQUIREMENTS = "requirements.txt"  # in the jobs' folder: the pins every node's Python needs
NODE_EXTRAS = EC2_EXTRAS  # what ec2 nodes add: their own Spark, the node program's S3
# the EMR nodes' bootstrap action, in the emr backend's folder
EMR_BOOTSTRAP = Path(__file__).parents[1] / "clusters" / "emr" / "bootstrap.sh"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip


@dataclass(frozen=True)
class CodeBundle:
    """The files of one code version, built in ``folder``."""

    version: str
    folder: Path
    files: tuple[str, ...]  # names inside folder, uploaded as code/<version>/<name>


def build_zip(jobs_dir: Path, dest: Path) -> Path:
    """Zip ``<jobs_dir>/fruits_spark/**/*.py`` as ``fruits_spark/<path>``, reproducibly."""
    package = jobs_dir / PACKAGE
    sources = sorted(package.rglob("*.py"))
    if not sources:
        raise FileNotFoundError(f"no {PACKAGE}/*.py under {jobs_dir}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for src in sources:
            name = src.relative_to(package).as_posix()
            info = zipfile.ZipInfo(f"{PACKAGE}/{name}", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, src.read_bytes())
    return dest


def job_requirements(jobs_dir: Path) -> str:
    """The EMR nodes' requirements: the jobs' own file, as constraints.txt pins it
    (:func:`fruits.storage.wheels.node_set`; bootstrap.sh installs it offline)."""
    lines = ["# Installed by bootstrap.sh on every EMR node (spark_jobs/requirements.txt)."]
    return "\n".join([*lines, *node_set("emr", jobs_dir)]) + "\n"


def node_requirements(jobs_dir: Path | None = None) -> str:
    """The ec2 nodes' requirements: the jobs' file, plus pyspark (the local backend's,
    so both run the same Spark) and boto3 for the node program, at the versions of the
    project's pins (constraints.txt), not the Airflow worker's: the worker of a cloud
    backend has no pyspark at all. The same lines as the staged wheels'
    (:func:`fruits.storage.wheels.node_set`)."""
    folder = jobs_dir or load_settings().jobs_dir
    lines = ["# Installed by the ec2 nodes' user data (spark_jobs/requirements.txt + Spark)."]
    return "\n".join([*lines, *node_set("ec2", folder)]) + "\n"


def build_bundle(
    jobs_dir: Path, folder: Path, extra_files: Mapping[str, bytes] | None = None
) -> CodeBundle:
    """Write every code file (and ``extra_files``: name -> content) into ``folder`` and
    name the version after their contents."""
    folder.mkdir(parents=True, exist_ok=True)
    build_zip(jobs_dir, folder / ZIP_NAME)
    files = [ZIP_NAME]
    for script in JOB_SCRIPTS:
        src = jobs_dir / script
        if not src.is_file():
            raise FileNotFoundError(f"job entry point missing: {src}")
        (folder / script).write_bytes(src.read_bytes())
        files.append(script)
    (folder / "bootstrap.sh").write_bytes(EMR_BOOTSTRAP.read_bytes())
    (folder / "requirements.txt").write_text(job_requirements(jobs_dir))
    files += ["bootstrap.sh", "requirements.txt"]
    for name, content in sorted((extra_files or {}).items()):
        (folder / name).write_bytes(content)
        files.append(name)
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return CodeBundle(version=digest.hexdigest()[:12], folder=folder, files=tuple(files))


def upload_code(
    hook: Any,
    settings: Settings,
    run: dict,
    *,
    ship_imagenet: bool,
    extra_files: Mapping[str, bytes] | None = None,
) -> dict[str, str]:
    """Build the bundle and send it to ``code/<version>/`` (only what S3 lacks), with the
    weights file when the run needs one there (a local file). With ``ship_imagenet``
    (remote nodes), ``imagenet`` becomes the staged copy's URI (:mod:`fruits.storage.weights`).
    ``extra_files``: a backend's own files for its nodes. Returns the URIs the steps use:
    ``py_files``, ``featurize``, ``reduce``, ``bootstrap``, ``requirements``,
    ``weights`` (a URI, or ``random``/``imagenet`` as the jobs take them), ``version``."""
    import tempfile

    from fruits.storage.s3sync import sync_up

    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_bundle(settings.jobs_dir, Path(tmp), extra_files)
        prefix = f"code/{bundle.version}/"
        files = {name: Path(tmp) / name for name in bundle.files}
        sync_up(hook, files, settings.bucket, prefix, delete_stale=False)
    uri = f"s3://{settings.bucket}/{prefix}"
    code = {
        "py_files": uri + ZIP_NAME,
        "featurize": uri + "featurize.py",
        "reduce": uri + "reduce.py",
        "bootstrap": uri + "bootstrap.sh",
        "requirements": uri + "requirements.txt",
        "version": bundle.version,
        "prefix": uri,
    }
    weights = run["weights"]
    local_file = None
    if weights == "imagenet" and ship_imagenet:
        # remote nodes read the copy `make stage-weights` put in the bucket, never the
        # Airflow worker's Keras cache (a fresh managed worker has none)
        from fruits.storage.weights import weights_uri

        weights = weights_uri(settings.bucket, run["model"])
    elif weights.startswith("/"):
        local_file = Path(weights)
    if local_file is not None:
        sync_up(
            hook, {local_file.name: local_file}, settings.bucket, prefix + "weights/",
            delete_stale=False,
        )  # fmt: skip
        weights = f"{uri}weights/{local_file.name}"
    code["weights"] = weights  # s3:// URIs are passed through as they are
    return code
