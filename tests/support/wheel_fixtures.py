"""The nodes' staged wheels on moto, for tests of whole emr and ec2 runs.

A cloud run's pre-flight refuses to start without the wheels its nodes install offline
(``s3://<bucket>/wheels/<requirements hash>/<arch>/index.json``). The tests never
download anything: ``staged_wheels`` stages tiny placeholder files, named as wheels,
through the same upload function ``make stage-wheels`` uses
(:func:`fruits.storage.wheels.upload_wheels`). The placeholders stand in for the
downloaded wheels; nothing installs them (moto boots no node).

``cloud_wheels`` (autouse where a conftest.py imports it) stages them for every test that
plays a cluster (``emr_steps``, ``ec2_nodes``) or starts from a bucket with earlier
outputs (``earlier_outputs``); a test of the missing wheels uses none of those.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from dag_support import BUCKET, ROOT

__all__ = ["cloud_wheels", "staged_wheels"]

# fixtures that mean "this test runs a cluster on moto" (tests/support/airflow_fixtures.py)
_CLUSTER_FIXTURES = frozenset({"emr_steps", "ec2_nodes", "serverless_jobs", "earlier_outputs"})


def placeholder_wheels(folder: Path, lines: tuple[str, ...]) -> Path:
    """One placeholder file per pinned line, named as its wheel would be."""
    folder.mkdir(parents=True, exist_ok=True)
    for line in lines:
        name, version = line.split("==", 1)
        wheel = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        wheel.write_bytes(f"placeholder for {line}, not a wheel\n".encode())
    return folder


@pytest.fixture
def staged_wheels(aws, tmp_path) -> Callable[..., list[str]]:
    """``staged_wheels(kinds=("emr", "ec2"), arches=("x86_64", "arm64"))``: placeholder
    wheels staged for those node kinds and architectures (the bucket made if missing);
    returns the staged folders' URIs."""
    from fruits.storage.wheels import node_wheels, upload_wheels

    def stage(
        kinds: tuple[str, ...] = ("emr", "ec2"), arches: tuple[str, ...] = ("x86_64", "arm64")
    ) -> list[str]:
        if BUCKET not in {b["Name"] for b in aws.s3.list_buckets()["Buckets"]}:
            aws.s3.create_bucket(Bucket=BUCKET)
        uris = []
        for kind in kinds:
            for arch in arches:
                wheels = node_wheels(kind, arch, ROOT / "spark_jobs")
                folder = placeholder_wheels(tmp_path / "wheels" / kind / arch, wheels.lines)
                upload_wheels(aws.s3, BUCKET, wheels, folder)
                uris.append(wheels.uri(BUCKET))
        return uris

    return stage


@pytest.fixture(autouse=True)
def cloud_wheels(request) -> None:
    """Stage the placeholder wheels for a test that plays a cluster (see the module)."""
    if _CLUSTER_FIXTURES & set(request.fixturenames):
        request.getfixturevalue("staged_wheels")()
