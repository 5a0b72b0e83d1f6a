"""featurize --model-file: the converted model ``make stage-weights`` made, run as the cloud
nodes run it -- the same features as Keras, checked against its manifest, and no
TensorFlow or Keras in the driver or the Python workers."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import featurize
import numpy as np
import pandas as pd
import pytest
from job_support import BIN, JOBS, assert_same_features, spark_submit_env

from fruits.storage.code_bundle import build_zip
from fruits_spark import rules
from fruits_spark.inference import converted, models
from fruits_spark.inference.images import decode_image
from fruits_spark.jobs import JobError

SIZE = 64


def save_weights(path: Path) -> Path:
    """MobileNetV2 weights made here, independently of the job's own 'random' ones."""
    import keras

    keras.utils.set_random_seed(11)
    keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3), pooling="avg"
    ).save_weights(str(path))
    return path


def converted_file(folder: Path, model: str, size: int, weights: Path | None) -> Path:
    """``<key>.tflite`` and ``<key>.json`` in ``folder``, as the staging command lays them
    out in the bucket's models/."""
    data = None if weights is None else weights.read_bytes()
    name = "random" if weights is None else str(weights)
    content, manifest = converted.convert(model, size, name, data, ".weights.h5")
    weights_id = rules.RANDOM_WEIGHTS_ID if data is None else models.sha256(data)
    key = converted.cache_key(model, size, weights_id)
    converted.store(key, content, manifest, folder)
    return folder / f"{key}.tflite"


def job_args(root: Path, out: Path, *extra: str):
    return featurize.parse_args([
        "--input", str(root), "--output", str(out / "features"),
        "--rejected", str(out / "rejected"), "--image-size", str(SIZE), "--batch-size", "8",
        *extra,
    ])  # fmt: skip


def test_a_converted_model_gives_keras_features(spark, sample_batch, tmp_path):
    weights = save_weights(tmp_path / "w.weights.h5")
    model_file = converted_file(tmp_path / "models", "mobilenetv2", SIZE, weights)
    args = job_args(sample_batch, tmp_path, "--model-file", str(model_file), "--weights", "mine")
    summary = featurize.run(spark, args)
    assert (summary.featurized, summary.rejected) == (24, 0)
    features = spark.read.parquet(str(tmp_path / "features"))
    meta = features.schema["features"].metadata
    assert (meta["runtime"], meta["weights"]) == ("litert", "mine")
    assert meta["weights_sha256"] == models.sha256(weights.read_bytes())
    rows = features.toPandas().sort_values("path").head(6)
    net = models.build_model("mobilenetv2", SIZE, weights)
    arrays = np.stack([decode_image(Path(p.removeprefix("file:")).read_bytes(), SIZE)
                       for p in rows.path])  # fmt: skip
    from keras.applications.mobilenet_v2 import preprocess_input

    expected = net.predict(preprocess_input(arrays.astype("float32")), verbose=0)
    assert_same_features(np.stack(rows.features), expected)


def test_a_model_file_for_another_model_size_or_bytes_is_refused(spark, sample_batch, tmp_path):
    model_file = converted_file(tmp_path / "models", "mobilenetv2", 32, None)
    with pytest.raises(JobError, match=r"converted for mobilenetv2@32, not mobilenetv2@64"):
        featurize.run(spark, job_args(sample_batch, tmp_path, "--model-file", str(model_file)))
    with pytest.raises(JobError, match=r"converted for mobilenetv2@32, not vgg16@32"):
        featurize.run(spark, featurize.parse_args([
            "--input", str(sample_batch), "--output", str(tmp_path / "f"),
            "--rejected", str(tmp_path / "r"), "--image-size", "32", "--model", "vgg16",
            "--model-file", str(model_file),
        ]))  # fmt: skip
    model_file.write_bytes(model_file.read_bytes()[:-10])  # torn: not what the manifest says
    with pytest.raises(JobError, match="sha256 is not the one its manifest names"):
        featurize.run(spark, featurize.parse_args([
            "--input", str(sample_batch), "--output", str(tmp_path / "f"),
            "--rejected", str(tmp_path / "r"), "--image-size", "32",
            "--model-file", str(model_file),
        ]))  # fmt: skip
    model_file.with_suffix(".json").unlink()  # the manifest is written last: no manifest, no file
    with pytest.raises(JobError, match=r"cannot read it or its manifest .*make stage-weights"):
        featurize.run(spark, job_args(sample_batch, tmp_path, "--model-file", str(model_file)))
    assert not (tmp_path / "features").exists()


def test_a_model_file_runs_on_litert_whatever_the_model(capsys):
    base = ["--input", "i", "--output", "o", "--rejected", "r", "--model", "vgg16"]
    assert featurize.parse_args(base).runtime == "keras"  # auto, without a converted file
    assert featurize.parse_args([*base, "--model-file", "m.tflite"]).runtime == "litert"
    with pytest.raises(SystemExit) as exit_:
        featurize.parse_args([*base, "--model-file", "m.tflite", "--runtime", "keras"])
    assert exit_.value.code == 2
    assert "--runtime keras cannot run --model-file" in capsys.readouterr().err


# An import hook, installed in every Python process of the spark-submit (its driver, the
# Python workers' daemon and so its workers) through sitecustomize on PYTHONPATH, which
# Spark passes on to the workers: TensorFlow and Keras are refused, as on a node that
# lacks them, and each process says it was guarded.
GUARD = textwrap.dedent("""
    import importlib.abc, os, sys
    LOG = os.environ["FRUITS_GUARD_LOG"]
    ROLE = "worker" if "PYTHON_WORKER_FACTORY_SECRET" in os.environ else "driver"

    def _note(line):
        with open(os.path.join(LOG, f"{ROLE}-{os.getpid()}.txt"), "a") as f:
            f.write(line + "\\n")

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
                _note("refused " + name)
                raise ImportError(name + " is refused: the nodes have no TensorFlow")
            return None

    sys.meta_path.insert(0, Refuse())
    _note("guarded")
""")


def guarded_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    hook, log = tmp_path / "hook", tmp_path / "guard-log"
    hook.mkdir()
    log.mkdir()
    (hook / "sitecustomize.py").write_text(GUARD)
    return spark_submit_env() | {"PYTHONPATH": str(hook), "FRUITS_GUARD_LOG": str(log)}, log


@pytest.mark.slow  # a spark-submit of its own
def test_featurize_with_a_model_file_never_imports_tensorflow_or_keras(sample_batch, tmp_path):
    model_file = converted_file(tmp_path / "models", "mobilenetv2", SIZE, None)
    py_files = build_zip(JOBS, tmp_path / "code" / "fruits_spark.zip")
    env, log = guarded_env(tmp_path)
    # the hook bites: a plain import of either fails under it
    for name in ("tensorflow", "keras"):
        done = subprocess.run([str(BIN / "python"), "-c", f"import {name}"], env=env,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode != 0 and "refused" in done.stderr, done.stderr[-500:]
    for path in log.iterdir():
        path.unlink()
    out = tmp_path / "out"
    cmd = [
        str(BIN / "spark-submit"), "--master", "local[2]",
        "--conf", "spark.ui.enabled=false", "--conf", "spark.driver.host=127.0.0.1",
        "--py-files", str(py_files), str(JOBS / "featurize.py"),
        "--input", str(sample_batch), "--output", str(out / "features"),
        "--rejected", str(out / "rejected"), "--image-size", str(SIZE),
        "--batch-size", "8", "--weights", "random", "--model-file", str(model_file),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "24 featurized, 0 rejected" in done.stdout + done.stderr
    notes = {path.name: path.read_text().split("\n") for path in log.iterdir()}
    refused = [line for lines in notes.values() for line in lines if line.startswith("refused")]
    assert refused == []
    # the driver and at least one Python worker ran under the hook
    assert any(name.startswith("driver-") for name in notes), notes
    assert any(name.startswith("worker-") for name in notes), notes
    features = pd.read_parquet(out / "features")
    assert len(features) == 24 and features.features.map(len).eq(1280).all()
    assert json.loads(model_file.with_suffix(".json").read_text())["model"] == "mobilenetv2"
