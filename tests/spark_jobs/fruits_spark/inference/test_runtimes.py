"""The CNN's runtimes: LiteRT's features equal Keras predict's, workers without
TensorFlow, the numpy preprocessing, and the converted-model cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import featurize
import numpy as np
import pytest
from job_support import assert_same_features

from fruits_spark import rules
from fruits_spark.inference import converted, models, runtimes
from fruits_spark.inference.images import decode_image


@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_numpy_preprocessing_is_exactly_keras_preprocess_input(model):
    import importlib

    models.import_tensorflow()
    keras_module = importlib.import_module(f"keras.applications.{models.spec(model).module}")
    pixels = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    ours = models.preprocess(model, pixels)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, keras_module.preprocess_input(pixels.astype("float32")))
    assert pixels.dtype == np.uint8  # the input is not modified


def keras_features(model: str, size: int, weights, paths) -> np.ndarray:
    net = models.build_model(model, size, weights)
    arrays = np.stack([decode_image(Path(p.removeprefix("file:")).read_bytes(), size)
                       for p in paths])  # fmt: skip
    return net.predict(models.preprocess(model, arrays), verbose=0)


@pytest.mark.parametrize(
    ("model", "size", "weights", "runtime"),
    [
        ("mobilenetv2", 96, "random", "litert"),
        ("vgg16", 96, "random", "litert"),
        ("mobilenet", 128, "imagenet", "litert"),  # the real ImageNet weights `make weights` stages
        ("mobilenetv2", 48, "random", "keras"),
    ],
)
def test_the_jobs_features_equal_a_plain_keras_predict(
    spark, sample_batch, tmp_path, model, size, weights, runtime
):
    """At a second image size beside test_featurize's 64, for both models and real
    weights: features within rtol 1e-4 of the features' scale, and not all equal."""
    args = featurize.parse_args([
        "--input", str(sample_batch), "--output", str(tmp_path / "f"),
        "--rejected", str(tmp_path / "r"), "--model", model, "--weights", weights,
        "--image-size", str(size), "--batch-size", "8", "--runtime", runtime,
    ])  # fmt: skip
    assert featurize.run(spark, args).featurized == 24
    features = spark.read.parquet(str(tmp_path / "f"))
    assert features.schema["features"].metadata["runtime"] == runtime
    rows = features.toPandas().sort_values("path").head(6)
    file = models.imagenet_weights_path(model) if weights == "imagenet" else None
    expected = keras_features(model, size, file, rows.path)
    assert expected.shape == (6, models.spec(model).n_features)
    if weights == "imagenet":
        assert float(np.abs(expected).max()) > 0.1  # real weights: features of a real scale
    assert_same_features(np.stack(rows.features), expected)


@pytest.mark.slow  # subprocesses that convert a model with TensorFlow
def test_a_litert_worker_never_imports_tensorflow(tmp_path):
    """The worker's whole path -- decode, preprocess, interpreter, predict -- in a fresh
    process: TensorFlow's import and trace are what LiteRT saves every worker."""
    net = models.build_model("mobilenetv2", 32)
    model_file = tmp_path / "m.tflite"
    model_file.write_bytes(runtimes.to_litert(net))
    code = f"""
import sys
from pathlib import Path
import pandas as pd
from fruits.dev.sample_batch import write_batch
from fruits_spark.inference import models, workers
paths = write_batch(Path({str(tmp_path / "in")!r}), per_label=1)
payload = Path({str(model_file)!r}).read_bytes()
config = workers.ModelConfig("mobilenetv2", 32, "litert", models.sha256(payload), "", "", 1)
batch = (pd.Series([str(p) for p in paths] + ["x/bad.jpg"]),
         pd.Series([p.read_bytes() for p in paths] + [b'not an image']))
frame = next(workers.featurize_batches(config, payload, iter([batch])))
assert frame.features.notna().sum() == len(paths) and frame.error.notna().sum() == 1
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TensorFlow imported"
print(len(frame))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "7"


def test_converted_models_are_cached_by_what_made_them(tmp_path):
    key = converted.cache_key("mobilenetv2", 224, "a" * 64)
    assert key.startswith("mobilenetv2-224-")
    others = {
        converted.cache_key("vgg16", 224, "a" * 64),
        converted.cache_key("mobilenetv2", 96, "a" * 64),
        converted.cache_key("mobilenetv2", 224, "b" * 64),
        converted.cache_key("mobilenetv2", 224, "random"),
        rules.converted_key("mobilenetv2", 224, "a" * 64, converted.converter_version(), "int8"),
        rules.converted_key("mobilenetv2", 224, "a" * 64, "keras==9 tensorflow-cpu==9"),
    }
    assert key not in others and len(others) == 6
    assert key == rules.converted_key("mobilenetv2", 224, "a" * 64, converted.converter_version())
    assert converted.load(key, tmp_path) is None
    converted.store(key, b"model bytes", {"weights_sha256": "a" * 64}, tmp_path)
    content, manifest = converted.load(key, tmp_path)
    assert content == b"model bytes" and manifest["weights_sha256"] == "a" * 64
    # a torn or tampered entry is a miss, never a wrong model
    (tmp_path / f"{key}.tflite").write_bytes(b"model byt")
    assert converted.load(key, tmp_path) is None
    (tmp_path / f"{key}.json").write_text("{not json")
    assert converted.load(key, tmp_path) is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_the_converter_version_names_the_installed_tensorflow_and_keras():
    import importlib.metadata as md

    assert converted.converter_version() == (
        f"keras=={md.version('keras')} tensorflow-cpu=={md.version('tensorflow-cpu')}"
    )


def test_model_cache_location_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(converted.CACHE_ENV, "off")
    assert converted.cache_dir() is None
    converted.store("k", b"x", {})  # no cache: nothing written, no error
    monkeypatch.setenv(converted.CACHE_ENV, str(tmp_path / "c"))
    assert converted.cache_dir() == tmp_path / "c"
    monkeypatch.delenv(converted.CACHE_ENV)
    assert converted.cache_dir() == Path.home() / ".cache" / "fruits-pipeline" / "models"


@pytest.mark.slow  # subprocesses that convert a model with TensorFlow
def test_a_second_run_reuses_the_conversion_without_tensorflow(tmp_path):
    """The cache hit path on the driver: same features, and no TensorFlow import."""
    env_code = f"""
import os, sys, json
os.environ["FRUITS_MODEL_CACHE"] = {str(tmp_path / "cache")!r}
from fruits_spark.inference import driver_model
prepared = driver_model.prepare(None, "mobilenetv2", 32, "random", "litert", 1)
print(json.dumps({{"conversion": prepared.conversion, "sha": prepared.config.payload_sha256,
                  "weights": prepared.config.weights_sha256,
                  "tf": "tensorflow" in sys.modules}}))
"""
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", env_code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["conversion"].startswith("converted in") and first["tf"]
    assert second["conversion"] == "cached" and not second["tf"]
    assert (first["sha"], first["weights"]) == (second["sha"], second["weights"])
    assert len(first["weights"]) == 64
