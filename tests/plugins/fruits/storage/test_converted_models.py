"""Converted models in the bucket: named without TensorFlow as the jobs name them, found
from the weights' recorded hash, uploaded model first and manifest last."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import re

import pytest
from dag_support import BUCKET, ROOT

from fruits.storage import converted_models as cm
from fruits.storage.weights import SHA256_META, stage, weights_key, weights_uri
from fruits_spark import rules
from fruits_spark.inference import converted

CONSTRAINTS = ROOT / "constraints.txt"


def test_the_key_from_constraints_is_the_jobs_key_for_the_installed_converter():
    """What validate_params computes on a worker without TensorFlow names the file the
    staging command's (and the local driver's) conversion made."""
    assert cm.converter_version(CONSTRAINTS) == (
        f"keras=={md.version('keras')} tensorflow-cpu=={md.version('tensorflow-cpu')}"
    )
    assert cm.converter_version(CONSTRAINTS) == converted.converter_version()
    for weights in ("random", "a" * 64):
        ours = cm.model_key("vgg16", 224, weights, cm.converter_version(CONSTRAINTS))
        assert ours == converted.cache_key("vgg16", 224, weights)


def test_the_key_changes_with_everything_that_made_the_file(tmp_path):
    converter = cm.converter_version(CONSTRAINTS)
    key = cm.model_key("mobilenetv2", 224, "a" * 64, converter)
    assert key.startswith("mobilenetv2-224-") and len(key) == len("mobilenetv2-224-") + 24
    pins = tmp_path / "constraints.txt"
    pins.write_text(re.sub(r"(?m)^(tensorflow[-_]cpu)==", r"\1==0", CONSTRAINTS.read_text()))
    others = {
        cm.model_key("mobilenet", 224, "a" * 64, converter),
        cm.model_key("mobilenetv2", 128, "a" * 64, converter),
        cm.model_key("mobilenetv2", 224, "b" * 64, converter),
        cm.model_key("mobilenetv2", 224, "a" * 64, cm.converter_version(pins)),
        rules.converted_key("mobilenetv2", 224, "a" * 64, converter, "int8"),
    }
    assert key not in others and len(others) == 5
    assert cm.file_key(key) == f"models/{key}.tflite" and cm.manifest_key(key) == (
        f"models/{key}.json"
    )
    assert cm.model_uri("b", key) == f"s3://b/models/{key}.tflite"


def test_random_weights_are_found_once_uploaded_manifest_last(aws):
    aws.s3.create_bucket(Bucket=BUCKET)
    found = cm.find(aws.s3, BUCKET, model="mobilenetv2", image_size=64, weights="random",
                    constraints=CONSTRAINTS)  # fmt: skip
    key = converted.cache_key("mobilenetv2", 64, "random")
    assert found == cm.Lookup(f"s3://{BUCKET}/models/{key}.tflite", False)
    # a model without its manifest (an upload cut short) is not found
    aws.s3.put_object(Bucket=BUCKET, Key=cm.file_key(key), Body=b"half")
    assert not cm.find(aws.s3, BUCKET, model="mobilenetv2", image_size=64, weights="random",
                       constraints=CONSTRAINTS).found  # fmt: skip
    assert cm.upload(aws.s3, BUCKET, key, b"tflite", {"model": "mobilenetv2"}) is True
    assert cm.find(aws.s3, BUCKET, model="mobilenetv2", image_size=64, weights="random",
                   constraints=CONSTRAINTS).found  # fmt: skip
    manifest = json.loads(aws.read(cm.manifest_key(key)))
    assert manifest == {"model": "mobilenetv2", "sha256": hashlib.sha256(b"tflite").hexdigest()}
    assert aws.read(cm.file_key(key)) == b"tflite"
    assert cm.upload(aws.s3, BUCKET, key, b"tflite", {"model": "mobilenetv2"}) is False
    assert cm.upload(aws.s3, BUCKET, key, b"other", {"model": "mobilenetv2"}) is True


def test_staged_imagenet_weights_are_hashed_from_their_metadata(aws, tmp_path):
    aws.s3.create_bucket(Bucket=BUCKET)
    cache = tmp_path / "keras"
    cache.mkdir()
    (cache / rules.MODELS["vgg16"].imagenet_file).write_bytes(b"vgg16 bytes")
    stage(aws.s3, BUCKET, ["vgg16"], cache)
    head = aws.s3.head_object(Bucket=BUCKET, Key=weights_key("vgg16"))
    digest = hashlib.sha256(b"vgg16 bytes").hexdigest()
    assert head["Metadata"][SHA256_META] == digest
    assert cm.weights_sha256(aws.s3, BUCKET, weights_uri(BUCKET, "vgg16")) == digest
    assert cm.weights_sha256(aws.s3, BUCKET, f"s3://{BUCKET}/models/none.h5") is None


def test_other_s3_weights_are_known_by_their_sidecar_while_unchanged(aws):
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.s3.create_bucket(Bucket="team-models")
    uri = "s3://team-models/w/fruits.weights.h5"
    etag = aws.s3.put_object(Bucket="team-models", Key="w/fruits.weights.h5", Body=b"v1")["ETag"]
    assert cm.weights_sha256(aws.s3, BUCKET, uri) is None  # never converted
    cm.record_source(aws.s3, BUCKET, uri, etag, "c" * 64)
    assert cm.source_key(uri).startswith("models/sources/")
    assert cm.weights_sha256(aws.s3, BUCKET, uri) == "c" * 64
    aws.s3.put_object(Bucket="team-models", Key="w/fruits.weights.h5", Body=b"v2")
    assert cm.weights_sha256(aws.s3, BUCKET, uri) is None  # changed since: not that model


def test_local_weights_are_hashed_here(tmp_path):
    path = tmp_path / "w.h5"
    path.write_bytes(b"local")
    assert cm.weights_sha256(None, BUCKET, str(path)) == hashlib.sha256(b"local").hexdigest()
    assert cm.weights_sha256(None, BUCKET, "random") == "random"


@pytest.mark.parametrize(
    ("weights", "line"),
    [
        ("imagenet", "make stage-weights FRUITS_BUCKET=b MODELS=vgg16 SIZES=128"),
        ("random", "make stage-weights FRUITS_BUCKET=b MODELS=vgg16 SIZES=128 WEIGHTS=random"),
    ],
)
def test_the_command_names_the_model_size_and_weights(weights, line):
    assert cm.stage_command("b", "vgg16", 128, weights) == line


def test_an_int8_model_has_its_own_key_and_its_own_command():
    converter = "keras==3.15.1 tensorflow-cpu==2.21.0"
    fp32 = cm.model_key("mobilenet", 224, "d914", converter)
    int8 = cm.model_key("mobilenet", 224, "d914", converter, "int8")
    assert int8 != fp32 and cm.model_uri("b", int8).endswith(f"models/{int8}.tflite")
    assert cm.stage_command("b", "mobilenet", 224, "imagenet", "int8") == (
        "make stage-weights FRUITS_BUCKET=b MODELS=mobilenet SIZES=224 PRECISIONS=int8"
    )
