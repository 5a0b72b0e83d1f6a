"""The serverless archive's recipe, tested on its inputs: the Docker build itself cannot
run here (no Docker daemon), so these check what goes into it and where it goes."""

from __future__ import annotations

import re

import pytest
from dag_support import BUCKET, ROOT

from fruits.clusters.serverless.request import ARCHIVE_NAME, PYTHON, archive_uri
from fruits.dev import serverless_archive as recipe
from fruits.settings import load_settings
from fruits.storage.wheels import node_wheels

JOBS = ROOT / "spark_jobs"


@pytest.fixture
def inputs(tmp_path):
    source = tmp_path / "Python-3.11.11.tgz"
    source.write_bytes(b"cpython source")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "numpy-2.2.6-cp311-cp311-manylinux_2_28_aarch64.whl").write_bytes(b"wheel")
    return source, wheels


def test_the_context_holds_the_jobs_pins_their_wheels_and_cpython(inputs, tmp_path):
    source, wheels = inputs
    context = recipe.prepare_context("ARM64", source, wheels, JOBS, tmp_path / "ctx")
    pins = (context / "requirements.txt").read_text().split()
    assert pins == list(node_wheels("emr", "arm64", JOBS).lines)  # the jobs' set
    assert not any(p.startswith(("pyspark==", "tensorflow")) for p in pins)  # EMR's Spark
    assert [p.name for p in (context / "wheels").iterdir()] == [
        "numpy-2.2.6-cp311-cp311-manylinux_2_28_aarch64.whl"
    ]
    assert (context / "Python.tgz").read_bytes() == b"cpython source"
    assert (context / "Dockerfile").read_text() == recipe.DOCKERFILE.read_text()


def test_the_context_refuses_another_python_or_no_wheels(inputs, tmp_path):
    source, wheels = inputs
    other = source.with_name("Python-3.12.1.tgz")
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="3.11"):
        recipe.prepare_context("X86_64", other, wheels, JOBS, tmp_path / "ctx")
    with pytest.raises(ValueError, match="make stage-wheels"):
        recipe.prepare_context("X86_64", source, tmp_path, JOBS, tmp_path / "ctx")


@pytest.mark.parametrize(("arch", "platform"), [("X86_64", "linux/amd64"),
                                                 ("ARM64", "linux/arm64")])  # fmt: skip
def test_each_architecture_builds_for_its_platform(arch, platform, tmp_path):
    cmd = recipe.docker_command(arch, tmp_path / "ctx", tmp_path / "out")
    assert cmd[:3] == ["docker", "buildx", "build"]
    assert cmd[cmd.index("--platform") + 1] == platform
    assert f"PLATFORM={platform}" in cmd
    assert cmd[cmd.index("--output") + 1] == f"type=local,dest={tmp_path / 'out'}"


def test_the_dockerfile_installs_offline_where_the_jobs_unpack_it():
    text = recipe.DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE=amazonlinux:2023$", text, re.M)  # EMR Serverless 7's OS
    assert "ARG PREFIX=/home/hadoop/environment" in text  # where #environment unpacks
    assert "--prefix=${PREFIX}" in text  # CPython built to live there
    assert "pip install --no-index --find-links /tmp/wheels" in text
    assert "-r /tmp/requirements.txt" in text
    assert f"/output/{ARCHIVE_NAME}" in text
    assert "ln -sf python3.11 ${PREFIX}/bin/python" in text  # what the confs name
    assert PYTHON == "./environment/bin/python"
    assert "UNTESTED HERE" in text


def test_the_archive_is_uploaded_where_the_runs_look_for_it():
    for arch in ("X86_64", "ARM64"):
        settings = load_settings({"FRUITS_BUCKET": BUCKET, "FRUITS_SERVERLESS_ARCH": arch})
        wheels = recipe.recipe_wheels(arch, settings.jobs_dir)
        assert archive_uri(settings) == f"s3://{BUCKET}/{wheels.prefix}{ARCHIVE_NAME}"
