"""Staged ImageNet weights: their place in the bucket, and staging that skips what the
bucket already holds (moto's S3)."""

from __future__ import annotations

import pytest
from dag_support import BUCKET

from fruits.settings import rules
from fruits.storage import weights


def cache_with(tmp_path, **files: bytes):
    """A Keras cache folder holding ``model=content`` no-top files."""
    folder = tmp_path / "keras" / "models"
    folder.mkdir(parents=True)
    for model, content in files.items():
        (folder / rules.MODELS[model].imagenet_file).write_bytes(content)
    return folder


def test_staged_weights_live_under_models_by_model():
    file = rules.MODELS["vgg16"].imagenet_file
    assert weights.weights_key("vgg16") == f"models/vgg16/{file}"
    assert weights.weights_uri("b", "vgg16") == f"s3://b/models/vgg16/{file}"


def test_the_cache_is_keras_own_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert weights.keras_cache_dir() == tmp_path / "kh" / "models"
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights.keras_cache_dir() == tmp_path / "home" / ".keras" / "models"


def test_cached_models_are_those_with_their_file(tmp_path):
    cache = cache_with(tmp_path, vgg16=b"v", mobilenet=b"m")
    assert weights.cached_models(cache) == ["mobilenet", "vgg16"]  # the registry's order
    assert weights.cached_models(tmp_path / "empty") == []


def test_staging_uploads_once_and_again_only_when_the_file_changes(aws, tmp_path):
    aws.s3.create_bucket(Bucket=BUCKET)
    cache = cache_with(tmp_path, mobilenet=b"weights v1", vgg16=b"vgg")
    key = weights.weights_key("mobilenet")

    first = weights.stage(aws.s3, BUCKET, ["mobilenet", "vgg16"], cache)
    assert [(s.model, s.uploaded, s.size) for s in first] == [
        ("mobilenet", True, 10), ("vgg16", True, 3)
    ]  # fmt: skip
    assert first[0].uri == f"s3://{BUCKET}/{key}"
    assert aws.read(key) == b"weights v1"
    assert sorted(aws.keys("models/")) == [key, weights.weights_key("vgg16")]

    again = weights.stage(aws.s3, BUCKET, ["mobilenet", "vgg16"], cache)
    assert [s.uploaded for s in again] == [False, False]

    (cache / rules.MODELS["mobilenet"].imagenet_file).write_bytes(b"weights v2")
    changed = weights.stage(aws.s3, BUCKET, ["mobilenet", "vgg16"], cache)
    assert [s.uploaded for s in changed] == [True, False]
    assert aws.read(key) == b"weights v2"


def test_staging_a_model_that_is_not_cached_says_so(aws, tmp_path):
    aws.s3.create_bucket(Bucket=BUCKET)
    cache = cache_with(tmp_path, mobilenet=b"m")
    with pytest.raises(RuntimeError, match="ImageNet weights for vgg16 are not cached at"):
        weights.stage(aws.s3, BUCKET, ["vgg16"], cache)
    assert aws.keys("models/") == []
