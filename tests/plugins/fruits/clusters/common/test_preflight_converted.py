"""The cloud runs' converted model, checked by validate_params before any cluster: found
for the run's model, weights and size, or a failure naming the command that makes it."""

from __future__ import annotations

import pytest
from dag_support import BUCKET, ROOT

from fruits.clusters.common.preflight import PreflightError, converted_model
from fruits.settings import load_settings
from fruits.storage import converted_models
from fruits.storage.weights import stage

RUN = {"model": "mobilenetv2", "weights": "random", "image_size": 64}


def settings():
    return load_settings({"FRUITS_COMPUTE": "emr", "FRUITS_BUCKET": BUCKET})


def put_model(aws, weights_sha256: str, size: int = 64) -> str:
    converter = converted_models.converter_version(ROOT / "constraints.txt")
    key = converted_models.model_key("mobilenetv2", size, weights_sha256, converter)
    converted_models.upload(aws.s3, BUCKET, key, b"tflite", {"model": "mobilenetv2"})
    return converted_models.model_uri(BUCKET, key)


def test_the_run_s_model_is_found_and_its_uri_returned(aws):
    aws.s3.create_bucket(Bucket=BUCKET)
    with pytest.raises(PreflightError) as caught:
        converted_model(settings(), RUN, aws.s3)
    message = str(caught.value)
    assert message.startswith("no converted model for mobilenetv2@64 with weights random at ")
    assert (f"`make stage-weights FRUITS_BUCKET={BUCKET} MODELS=mobilenetv2 SIZES=64 "
            "WEIGHTS=random`") in message  # fmt: skip
    put_model(aws, "random", size=128)  # another size is another model
    with pytest.raises(PreflightError):
        converted_model(settings(), RUN, aws.s3)
    uri = put_model(aws, "random")
    assert converted_model(settings(), RUN, aws.s3) == uri
    assert uri in message  # the failure named the very file


def test_imagenet_means_the_staged_weights_and_their_recorded_hash(aws, tmp_path):
    import hashlib

    aws.s3.create_bucket(Bucket=BUCKET)
    (tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5").write_bytes(
        b"imagenet v1"
    )
    stage(aws.s3, BUCKET, ["mobilenetv2"], tmp_path)
    run = {**RUN, "weights": "imagenet"}
    with pytest.raises(PreflightError, match=r"MODELS=mobilenetv2 SIZES=64`"):
        converted_model(settings(), run, aws.s3)
    put_model(aws, hashlib.sha256(b"imagenet v2").hexdigest())  # other bytes' model
    with pytest.raises(PreflightError):
        converted_model(settings(), run, aws.s3)
    uri = put_model(aws, hashlib.sha256(b"imagenet v1").hexdigest())
    assert converted_model(settings(), run, aws.s3) == uri


def test_s3_weights_never_converted_name_the_command_with_them(aws):
    aws.s3.create_bucket(Bucket=BUCKET)
    weights = f"s3://{BUCKET}/team/w.weights.h5"
    aws.s3.put_object(Bucket=BUCKET, Key="team/w.weights.h5", Body=b"h5")
    with pytest.raises(PreflightError) as caught:
        converted_model(settings(), {**RUN, "weights": weights}, aws.s3)
    assert f"in s3://{BUCKET}/models/ for {weights}" in str(caught.value)
    assert f"WEIGHTS={weights}`" in str(caught.value)


def test_an_int8_run_needs_the_int8_model_not_the_fp32_one(aws):
    aws.s3.create_bucket(Bucket=BUCKET)
    run = {**RUN, "model": "mobilenet", "precision": "int8"}
    converter = converted_models.converter_version(ROOT / "constraints.txt")
    fp32 = converted_models.model_key("mobilenet", 64, "random", converter)
    converted_models.upload(aws.s3, BUCKET, fp32, b"tflite", {"model": "mobilenet"})
    with pytest.raises(PreflightError) as caught:
        converted_model(settings(), run, aws.s3)
    message = str(caught.value)
    assert message.startswith("no converted model for mobilenet@64 int8 with weights random")
    assert "MODELS=mobilenet SIZES=64 WEIGHTS=random PRECISIONS=int8`" in message
    int8 = converted_models.model_key("mobilenet", 64, "random", converter, "int8")
    converted_models.upload(aws.s3, BUCKET, int8, b"int8 tflite", {"model": "mobilenet"})
    assert converted_model(settings(), run, aws.s3) == converted_models.model_uri(BUCKET, int8)
