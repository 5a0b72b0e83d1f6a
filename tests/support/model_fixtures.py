"""Converted models on moto, for tests of whole emr and ec2 runs.

A cloud run's ``validate_params`` refuses to start without the converted model its nodes
load (``s3://<bucket>/models/<key>.tflite`` and its manifest): the nodes have no
TensorFlow. ``staged_model`` stages one through the same upload function
``make stage-weights`` uses (:func:`fruits.storage.converted_models.upload`): a real
conversion of seeded random weights, made once per session by the dev install's
TensorFlow in a subprocess (the tests' Airflow process never imports it) and kept in the
session's driver cache (``FRUITS_MODEL_CACHE``, tests/conftest.py), which the jobs'
drivers share.

``cloud_models`` (autouse where a conftest.py imports it) stages the model of the e2e
runs (mobilenetv2 at 64 px, random weights) for every test that plays a cluster
(``emr_steps``, ``ec2_nodes``) or starts from a bucket with earlier outputs
(``earlier_outputs``); a test of the missing model uses none of those.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from dag_support import BUCKET, ROOT

__all__ = ["cloud_models", "random_model", "staged_model"]

# fixtures that mean "this test runs a cluster on moto" (tests/support/airflow_fixtures.py)
_CLUSTER_FIXTURES = frozenset({"emr_steps", "ec2_nodes", "serverless_jobs", "earlier_outputs"})
E2E_MODEL = ("mobilenetv2", 64)  # what the e2e runs' CONF asks for, with weights=random


def _jobs_env() -> dict[str, str]:
    paths = [str(ROOT / "spark_jobs"), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths)),
            "TF_CPP_MIN_LOG_LEVEL": "2"}  # fmt: skip


@pytest.fixture(scope="session")
def random_model(model_cache) -> Callable[[str, int], tuple[bytes, dict]]:
    """``random_model(model, size)``: ``(tflite bytes, manifest)`` of the seeded random
    weights, from the session's cache, converted there first if missing."""
    from fruits_spark.inference import converted

    def get(model: str, size: int) -> tuple[bytes, dict]:
        key = converted.cache_key(model, size, "random")
        hit = converted.load(key, model_cache)
        if hit is None:
            code = (
                "from fruits_spark.inference import converted\n"
                f"converted.cached_or_convert({model!r}, {size}, 'random', None, '.weights.h5')\n"
            )
            env = {**_jobs_env(), converted.CACHE_ENV: str(model_cache)}
            done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                  text=True, timeout=600)  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
            hit = converted.load(key, model_cache)
        assert hit is not None, f"no converted {model}@{size} in {model_cache}"
        return hit

    return get


@pytest.fixture
def staged_model(aws, random_model) -> Callable[..., str]:
    """``staged_model(model="mobilenetv2", size=64, weights_sha256="random", content=None)``:
    a converted model staged as ``make stage-weights`` stages it (the bucket made if
    missing); returns its URI. ``content``: the file's bytes (default: the real random
    conversion, whatever ``weights_sha256`` says, which the played clusters' real
    featurize runs; given, no conversion is made)."""
    from fruits.settings import constraints_file
    from fruits.storage import converted_models

    def stage(
        model: str = E2E_MODEL[0],
        size: int = E2E_MODEL[1],
        weights_sha256: str = "random",
        content: bytes | None = None,
    ) -> str:
        if BUCKET not in {b["Name"] for b in aws.s3.list_buckets()["Buckets"]}:
            aws.s3.create_bucket(Bucket=BUCKET)
        if content is None:
            content, manifest = random_model(model, size)
        else:
            manifest = {"model": model, "image_size": size, "precision": "float32"}
        converter = converted_models.converter_version(constraints_file(ROOT / "spark_jobs"))
        key = converted_models.model_key(model, size, weights_sha256, converter)
        manifest = {**manifest, "weights_sha256": weights_sha256}
        converted_models.upload(aws.s3, BUCKET, key, content, manifest)
        return converted_models.model_uri(BUCKET, key)

    return stage


@pytest.fixture(autouse=True)
def cloud_models(request) -> None:
    """Stage the e2e runs' converted model for a test that plays a cluster (see above)."""
    if _CLUSTER_FIXTURES & set(request.fixturenames):
        request.getfixturevalue("staged_model")()
