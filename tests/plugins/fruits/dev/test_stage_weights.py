"""``make stage-weights``: Keras' cached files to the bucket (moto), no TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

from dag_support import BUCKET, ROOT

from fruits.dev import stage_weights
from fruits.settings import rules
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

    assert stage_weights.main(["--endpoint-url", moto]) == 0
    out = capsys.readouterr().out
    assert f"uploaded  s3://{BUCKET}/{weights_key('mobilenet')}" in out
    assert f"uploaded  s3://{BUCKET}/{weights_key('vgg16')}" in out
    assert aws.read(weights_key("vgg16")) == b"vgg16"

    assert stage_weights.main(["--endpoint-url", moto, "--models", "vgg16"]) == 0
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
        f"assert stage_weights.main(['--endpoint-url', {moto!r}, '--bucket', {BUCKET!r}]) == 0\n"
        "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        str(ROOT / p) for p in ("plugins", "spark_jobs"))}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]")
