"""``make stage-weights``: Keras' cached files to the bucket (moto) -- with ``--no-convert``
no TensorFlow -- and the converted models the cloud nodes run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
from dag_support import BUCKET, ROOT

from fruits.dev import stage_weights
from fruits.settings import rules
from fruits.storage import converted_models
from fruits.storage.weights import weights_key


def cached(tmp_path, monkeypatch, *models: str):
    """KERAS_HOME with these models' no-top files in its cache."""
    folder = tmp_path / "keras" / "models"
    folder.mkdir(parents=True)
    for model in models:
        (folder / rules.MODELS[model].imagenet_file).write_bytes(model.encode())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return folder


def test_stages_every_cached_model_then_skips_them(aws, moto, tmp_path, monkeypatch, capsys):
    aws.s3.create_bucket(Bucket=BUCKET)
    cached(tmp_path, monkeypatch, "mobilenet", "vgg16")
    monkeypatch.setenv("FRUITS_BUCKET", BUCKET)

    assert stage_weights.main(["--endpoint-url", moto, "--no-convert"]) == 0
    out = capsys.readouterr().out
    assert f"uploaded  s3://{BUCKET}/{weights_key('mobilenet')}" in out
    assert f"uploaded  s3://{BUCKET}/{weights_key('vgg16')}" in out
    assert aws.read(weights_key("vgg16")) == b"vgg16"

    assert stage_weights.main(["--endpoint-url", moto, "--models", "vgg16", "--no-convert"]) == 0
    out = capsys.readouterr().out
    assert out == f"unchanged s3://{BUCKET}/{weights_key('vgg16')} (0.0 MB)\n"


def test_nothing_cached_or_no_bucket_is_one_line_of_error(aws, moto, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    assert stage_weights.main(["--endpoint-url", moto, "--bucket", BUCKET]) == 1
    assert "no ImageNet weights in Keras' cache" in capsys.readouterr().err

    cached(tmp_path, monkeypatch, "mobilenet")
    assert stage_weights.main(["--endpoint-url", moto, "--bucket", "no-such-bucket"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cannot stage weights to s3://no-such-bucket/: no bucket no-such-bucket")

    assert stage_weights.main(["--endpoint-url", moto, "--bucket", BUCKET, "--models",
                               "vgg16"]) == 1  # fmt: skip
    assert "ImageNet weights for vgg16 are not cached" in capsys.readouterr().err


def test_the_command_never_imports_tensorflow(aws, moto, tmp_path, monkeypatch):
    aws.s3.create_bucket(Bucket=BUCKET)
    cached(tmp_path, monkeypatch, "mobilenet")
    code = (
        "import sys\nfrom fruits.dev import stage_weights\n"
        f"assert stage_weights.main(['--endpoint-url', {moto!r}, '--bucket', {BUCKET!r},"
        " '--no-convert']) == 0\n"
        "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        str(ROOT / p) for p in ("plugins", "spark_jobs"))}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]")


# -- the conversion --------------------------------------------------------------------


def run_command(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh Python (TensorFlow, when imported, stays out of this one)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join(
        str(ROOT / p) for p in ("plugins", "spark_jobs"))}  # fmt: skip
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip


def lookup(aws, weights: str) -> converted_models.Lookup:
    """What validate_params finds for mobilenetv2@32 with ``weights``, without TensorFlow."""
    return converted_models.find(aws.s3, BUCKET, model="mobilenetv2", image_size=32,
                                 weights=weights, constraints=ROOT / "constraints.txt")  # fmt: skip


def converter() -> str:
    return converted_models.converter_version(ROOT / "constraints.txt")


def litert_features(content: bytes, size: int) -> int:
    """How many features the converted model gives for one image (LiteRT, no TensorFlow)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(inp["shape"]) == [1, size, size, 3]
    interpreter.set_tensor(inp["index"], np.zeros((1, size, size, 3), np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"]).shape[-1]


@pytest.mark.slow  # TensorFlow converts in a subprocess
def test_random_weights_are_converted_once_then_found_without_tensorflow(aws, moto):
    aws.s3.create_bucket(Bucket=BUCKET)
    args = ["--endpoint-url", moto, "--bucket", BUCKET, "--weights", "random",
            "--models", "mobilenetv2", "--image-sizes", "32"]  # fmt: skip
    code = (
        "import sys\nfrom fruits.dev import stage_weights\n"
        f"assert stage_weights.main({args!r}) == 0\n"
        "print('tf' if 'tensorflow' in sys.modules else 'no tf')\n"
    )
    key = converted_models.model_key("mobilenetv2", 32, "random", converter())
    done = run_command(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"uploaded  s3://{BUCKET}/models/{key}.tflite"), done.stdout
    content = aws.read(f"models/{key}.tflite")
    manifest = json.loads(aws.read(f"models/{key}.json"))
    assert manifest["sha256"] == hashlib.sha256(content).hexdigest()
    assert (manifest["model"], manifest["image_size"], manifest["precision"]) == (
        "mobilenetv2", 32, "float32")  # fmt: skip
    assert litert_features(content, 32) == 1280
    # what validate_params finds, without TensorFlow
    assert lookup(aws, "random") == converted_models.Lookup(
        f"s3://{BUCKET}/models/{key}.tflite", True
    )

    again = run_command(code)
    assert again.returncode == 0, again.stderr[-3000:]
    line = f"unchanged s3://{BUCKET}/models/{key}.tflite (mobilenetv2@32, weights random)"
    assert again.stdout.split("\n")[:2] == [line, "no tf"]


@pytest.mark.slow  # TensorFlow makes weights and converts, in a subprocess
def test_s3_weights_are_converted_and_found_while_unchanged(aws, moto):
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.s3.create_bucket(Bucket="team-models")
    uri = "s3://team-models/w/mine.weights.h5"
    args = ["--endpoint-url", moto, "--bucket", BUCKET, "--weights", uri,
            "--models", "mobilenetv2", "--image-sizes", "32"]  # fmt: skip
    code = (
        "import tempfile, boto3, keras\nfrom pathlib import Path\n"
        "from fruits.dev import stage_weights\n"
        "keras.utils.set_random_seed(5)\n"
        "net = keras.applications.MobileNetV2(include_top=False, weights=None, "
        "input_shape=(32, 32, 3), pooling='avg')\n"
        "path = Path(tempfile.mkdtemp()) / 'mine.weights.h5'\nnet.save_weights(str(path))\n"
        f"boto3.client('s3', endpoint_url={moto!r}).upload_file(str(path), 'team-models', "
        "'w/mine.weights.h5')\n"
        f"assert stage_weights.main({args!r}) == 0\n"
    )
    done = run_command(code)
    assert done.returncode == 0, done.stderr[-3000:]
    body = aws.s3.get_object(Bucket="team-models", Key="w/mine.weights.h5")["Body"].read()
    key = converted_models.model_key("mobilenetv2", 32, hashlib.sha256(body).hexdigest(),
                                     converter())  # fmt: skip
    assert f"uploaded  s3://{BUCKET}/models/{key}.tflite" in done.stdout
    assert lookup(aws, uri) == converted_models.Lookup(f"s3://{BUCKET}/models/{key}.tflite", True)
    assert json.loads(aws.read(f"models/{key}.json"))["weights"] == uri
    aws.s3.put_object(Bucket="team-models", Key="w/mine.weights.h5", Body=b"replaced")
    assert lookup(aws, uri).uri is None  # changed since: not what was converted


@pytest.mark.slow  # TensorFlow tries the conversion in a subprocess
def test_weights_that_do_not_fit_are_staged_but_not_converted(aws, moto, tmp_path, monkeypatch):
    aws.s3.create_bucket(Bucket=BUCKET)
    cached(tmp_path, monkeypatch, "mobilenet")  # stand-in bytes, not a weights file
    done = run_command(
        "import sys\nfrom fruits.dev import stage_weights\n"
        f"sys.exit(stage_weights.main(['--endpoint-url', {moto!r}, '--bucket', {BUCKET!r},"
        " '--image-sizes', '32']))\n"
    )
    assert done.returncode == 1
    assert f"uploaded  s3://{BUCKET}/{weights_key('mobilenet')}" in done.stdout
    assert f"--weights s3://{BUCKET}/{weights_key('mobilenet')} do not fit mobilenet@32" in (
        done.stderr)  # fmt: skip
    assert [k for k in aws.keys("models/") if k.endswith((".tflite", ".json"))] == []


def test_another_converter_than_the_pins_is_refused(tmp_path):
    pins = tmp_path / "constraints.txt"
    text = (ROOT / "constraints.txt").read_text()
    pins.write_text(re.sub(r"(?m)^keras==\S+", "keras==0.0.1", text))
    with pytest.raises(
        stage_weights.StageError, match=r"converting needs keras==0.0.1 .*make venv"
    ):
        stage_weights.check_converter(pins)
    assert stage_weights.check_converter(ROOT / "constraints.txt") == converter()


def test_other_weights_need_a_model_and_sizes_default_to_the_dags(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        stage_weights.parse_args(["--weights", "random"])
    assert "--weights random needs --models" in capsys.readouterr().err
    monkeypatch.delenv("FRUITS_IMAGE_SIZE", raising=False)
    assert stage_weights.parse_args([]).image_sizes == [224]
    monkeypatch.setenv("FRUITS_IMAGE_SIZE", "128")
    assert stage_weights.parse_args(["--image-sizes", "96", "64"]).image_sizes == [96, 64]
    assert stage_weights.parse_args([]).image_sizes == [128]


def test_int8_is_converted_for_the_measured_models_only(capsys):
    args = stage_weights.parse_args(["--models", "mobilenet", "--precisions", "fp32", "int8"])
    assert args.precisions == ["fp32", "int8"]
    assert stage_weights.parse_args([]).precisions == ["fp32"]
    with pytest.raises(SystemExit):
        stage_weights.parse_args(["--models", "vgg16", "--precisions", "int8"])
    assert "int8 is measured for mobilenet only, not vgg16" in capsys.readouterr().err
