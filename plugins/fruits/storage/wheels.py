"""The cluster nodes' wheels: what each kind of node installs, where its wheels sit in the
bucket, and whether they are there.

The nodes install offline (``pip install --no-index --find-links``) from wheels an
operator stages once with ``make stage-wheels`` (:mod:`fruits.dev.stage_wheels`), so
no node reaches the package index and no private subnet needs a NAT gateway for pip:

- ``emr``: ``spark_jobs/requirements.txt`` (EMR brings its own Spark);
- ``ec2``: the same, plus pyspark (its own Spark) and boto3 (the node program);

each pinned as ``constraints.txt`` pins it, hashed over those pinned lines, staged to
``s3://<bucket>/wheels/<hash>/<arch>/`` (``x86_64`` or ``arm64``, Graviton) with a
manifest, ``index.json``, written last: a folder without it is not staged.

Light on purpose (standard library): the Airflow side imports it in ``plan_run`` and the
backends' pre-flight.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruits.settings import constraints_file

PREFIX = "wheels/"
MANIFEST = "index.json"
REQUIREMENTS = "requirements.txt"  # in the jobs' folder
ARCHES = ("x86_64", "arm64")
# the nodes' Python (EMR's bootstrap and the ec2 user data install python3.11)
PYTHON_VERSION = "3.11"
# Amazon Linux 2023 has glibc 2.34; several tags, since pip takes only the ones it is
# given: the newest wheels are manylinux_2_27/2_28, older ones manylinux2014 only
PLATFORMS = {
    "x86_64": ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux2014_x86_64"),
    "arm64": ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64"),
}
EC2_EXTRAS = ("pyspark", "boto3")  # ec2 nodes: their own Spark, the node program's S3
SETS = ("emr", "ec2")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(path: Path) -> list[str]:
    """The ``name==version`` lines of a requirements file (comments and blanks dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def pin_of(name: str, constraints: Path) -> str:
    """``name==version`` as ``constraints`` pins it (names compared as pip does)."""
    for line in pinned(constraints):
        if _norm(line.split("==", 1)[0]) == _norm(name):
            return line
    raise LookupError(f"{constraints} pins no {name}: the nodes need it pinned")


def node_set(kind: str, jobs_dir: Path) -> list[str]:
    """The pinned lines ``kind`` (``emr`` or ``ec2``) nodes install, in the jobs' file's
    order (the ec2 extras last). A jobs' pin that ``constraints.txt`` contradicts fails:
    staging applies the constraints, so the two must agree."""
    if kind not in SETS:
        raise ValueError(f"node set {kind!r}: one of {', '.join(SETS)}")
    constraints = constraints_file(jobs_dir)
    lines = pinned(jobs_dir / REQUIREMENTS)
    for line in lines:
        name = re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0]
        locked = pin_of(name, constraints)
        if _norm(locked) != _norm(line):
            raise ValueError(f"{jobs_dir / REQUIREMENTS}: {line} but {constraints} has {locked}")
    if kind == "ec2":
        lines += [pin_of(name, constraints) for name in EC2_EXTRAS]
    return lines


def requirements_hash(lines: Iterable[str]) -> str:
    """The name of a set's wheel folder: a hash of its pinned lines (names normalised, order
    ignored), so the same pins find the same wheels and a changed pin finds none."""
    text = "\n".join(sorted(_norm(line.split("==", 1)[0]) + "==" + line.split("==", 1)[1]
                            for line in lines))  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_arch(arch: str, setting: str = "arch") -> str:
    if arch not in ARCHES:
        raise ValueError(f"{setting}={arch!r}: one of {', '.join(ARCHES)}")
    return arch


def wheels_prefix(digest: str, arch: str) -> str:
    """``wheels/<hash>/<arch>/``: one set's wheels for one architecture."""
    return f"{PREFIX}{digest}/{check_arch(arch)}/"


def wheels_uri(bucket: str, digest: str, arch: str) -> str:
    """The folder a node copies (``aws s3 cp --recursive``) and installs from."""
    return f"s3://{bucket}/{wheels_prefix(digest, arch)}"


def stage_command(bucket: str) -> str:
    """What an operator runs, from a machine that reaches the package index."""
    return f"make stage-wheels FRUITS_BUCKET={bucket}"


@dataclass(frozen=True)
class NodeWheels:
    """One kind of node's wheels in one architecture: where they are and what they hold."""

    kind: str
    arch: str
    lines: tuple[str, ...]

    @property
    def digest(self) -> str:
        return requirements_hash(self.lines)

    @property
    def prefix(self) -> str:
        return wheels_prefix(self.digest, self.arch)

    def uri(self, bucket: str) -> str:
        return wheels_uri(bucket, self.digest, self.arch)

    def manifest(self, files: Iterable[str]) -> dict[str, Any]:
        return {"kind": self.kind, "arch": self.arch, "requirements": list(self.lines),
                "wheels": sorted(files)}  # fmt: skip


def node_wheels(kind: str, arch: str, jobs_dir: Path) -> NodeWheels:
    return NodeWheels(kind, check_arch(arch), tuple(node_set(kind, jobs_dir)))


def staged_manifest(client: Any, bucket: str, wheels: NodeWheels) -> dict | None:
    """The manifest of ``wheels`` in the bucket, or None when the folder is not (fully)
    staged. ``client``: boto3's S3 client."""
    from botocore.exceptions import ClientError

    try:
        body = client.get_object(Bucket=bucket, Key=wheels.prefix + MANIFEST)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return json.loads(body)


def upload_wheels(client: Any, bucket: str, wheels: NodeWheels, folder: Path) -> list[str]:
    """Upload every wheel of ``folder`` to the set's prefix (only those S3 lacks at the same
    size), then the manifest, last: a node or a pre-flight never sees a half-staged
    folder as staged. Returns the names uploaded. Runs with the operator's credentials
    (``make stage-wheels``), never as a role of the stack."""
    files = sorted(folder.glob("*.whl"))
    if not files:
        raise FileNotFoundError(f"no wheels in {folder}")
    present = {}
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=wheels.prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            present[obj["Key"]] = obj["Size"]
    sent = []
    for path in files:
        key = wheels.prefix + path.name
        if present.get(key) != path.stat().st_size:
            client.upload_file(str(path), bucket, key)
            sent.append(path.name)
    body = json.dumps(wheels.manifest(p.name for p in files), indent=1).encode()
    client.put_object(Bucket=bucket, Key=wheels.prefix + MANIFEST, Body=body,
                      ContentType="application/json")  # fmt: skip
    return sent
