"""Run parameters: every bad value is refused with the parameter's name; the batch is
picked from the parameter, the logical date, or the latest batch folder."""

from __future__ import annotations

import datetime as dt

import pytest
from dag_support import BUCKET

from fruits.params import ParamError, check_weights_readable, validate
from fruits.settings import load_settings
from fruits.storage.batches import latest_batch

GOOD = {"model": "vgg16", "weights": "random", "variance": 0.9, "image_size": 96}
NOON = dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC)


def check(raw, logical_date=NOON, env=None):
    return validate(raw, logical_date=logical_date, settings=load_settings(env or {}))


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("batch_date", "2026-13-01"),
        ("batch_date", "24/11/2026"),
        ("batch_date", "yesterday"),
        ("batch_date", 20261124),
        ("variance", 0),
        ("variance", -0.1),
        ("variance", 1.5),
        ("variance", "lots"),
        ("variance", True),
        ("model", "resnet50"),
        ("model", None),
        ("weights", "imagenet1k"),
        ("weights", "s3://bucket-only"),
        ("weights", "s3://b/model.pt"),
        ("weights", "relative/path.h5"),
        ("weights", ""),
        ("image_size", 16),
        ("image_size", 4096),
        ("image_size", 96.5),
        ("precision", "fp16"),
        ("precision", "int8"),  # GOOD's vgg16: int8 is measured for mobilenet only
        ("precision", None),
    ],
)
def test_bad_values_name_the_parameter(param, value):
    with pytest.raises(ParamError) as err:
        check({**GOOD, param: value})
    assert err.value.param == param
    assert f"param {param!r}" in str(err.value)


def test_good_values_pass_through():
    run = check({**GOOD, "batch_date": "2026-11-20", "image_size": "128", "variance": "1"})
    assert run.as_dict() == {
        "batch": "2026-11-20",
        "source": load_settings({}).incoming,
        "model": "vgg16",
        "runtime": "auto",
        "weights": "random",
        "image_size": 128,
        "variance": 1.0,
        "precision": "fp32",
    }
    assert check({**GOOD, "weights": "file:///opt/w/m.weights.h5"}).weights == "/opt/w/m.weights.h5"
    assert check({**GOOD, "weights": "s3://b/k/m.h5"}).weights == "s3://b/k/m.h5"


def test_int8_is_for_measured_models_on_litert():
    run = check({**GOOD, "model": "mobilenet", "precision": "int8"})
    assert (run.model, run.precision) == ("mobilenet", "int8")
    with pytest.raises(ParamError, match="int8 is measured for mobilenet only, not vgg16"):
        check({**GOOD, "precision": "int8"})
    with pytest.raises(ParamError, match="runtime auto or litert, not keras") as err:
        check({**GOOD, "model": "mobilenet", "runtime": "keras", "precision": "int8"})
    assert err.value.param == "precision"
    env = {"FRUITS_PRECISION": "int8", "FRUITS_MODEL": "mobilenet"}
    assert check({}, env=env).precision == "int8"


def test_defaults_come_from_the_environment():
    run = check({}, env={"FRUITS_MODEL": "vgg16", "FRUITS_WEIGHTS": "random"})
    assert (run.model, run.weights, run.image_size, run.variance) == ("vgg16", "random", 224, 0.95)


def test_batch_is_the_param_else_the_logical_date_else_the_latest_folder(tmp_path):
    env = {"FRUITS_INCOMING": str(tmp_path)}
    assert check({**GOOD, "batch_date": "2026-01-02"}, env=env).batch == "2026-01-02"
    assert check(GOOD, env=env).batch == "2026-11-24"  # logical date, UTC
    late_evening = dt.datetime(2026, 11, 24, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert check(GOOD, logical_date=late_evening, env=env).batch == "2026-11-25"
    # no logical date (a manual run): the latest YYYY-MM-DD folder present
    for name in ("2026-11-01", "2026-11-21", "2026-11-03", "not-a-date", "2026-02-30"):
        (tmp_path / name).mkdir()
    assert latest_batch(str(tmp_path)) == "2026-11-21"
    assert check(GOOD, logical_date=None, env=env).batch == "2026-11-21"
    # nothing present: today (UTC)
    empty = {"FRUITS_INCOMING": str(tmp_path / "none")}
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert check(GOOD, logical_date=None, env=empty).batch == today


def test_the_source_is_the_param_else_fruits_incoming(tmp_path):
    env = {"FRUITS_INCOMING": str(tmp_path)}
    assert check(GOOD, env=env).source == str(tmp_path)
    assert check({**GOOD, "source": "s3://landing-zone/fruits/"}, env=env).source == (
        "s3://landing-zone/fruits"
    )
    assert check({**GOOD, "source": "/mnt/batches"}, env=env).source == "/mnt/batches"
    for bad in ("relative/folder", "s3://", "https://example.com/x", 3):
        with pytest.raises(ParamError, match="'source'"):
            check({**GOOD, "source": bad}, env=env)


def test_weights_must_be_readable(moto, aws, tmp_path):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id="aws_default")
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.s3.put_object(Bucket=BUCKET, Key="weights/ok.weights.h5", Body=b"h5")
    check_weights_readable(f"s3://{BUCKET}/weights/ok.weights.h5", "mobilenetv2", hook)
    check_weights_readable("random", "mobilenetv2", hook)
    local = tmp_path / "w.h5"
    local.write_bytes(b"h5")
    check_weights_readable(str(local), "mobilenetv2", hook)
    for missing in (
        f"s3://{BUCKET}/weights/missing.weights.h5",
        "s3://no-such-bucket/w.h5",
        str(tmp_path / "missing.h5"),
    ):
        with pytest.raises(ParamError, match="param 'weights': cannot read"):
            check_weights_readable(missing, "mobilenetv2", hook)


def test_imagenet_weights_must_be_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(ParamError, match="param 'weights'.*cannot be downloaded here"):
        check_weights_readable("imagenet", "mobilenetv2", None)
    cached = tmp_path / "keras" / "models"
    cached.mkdir(parents=True)
    (cached / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5").write_bytes(b"")
    check_weights_readable("imagenet", "mobilenetv2", None)


def test_imagenet_weights_of_a_remote_run_must_be_staged(moto, aws, tmp_path, monkeypatch):
    """emr and ec2 nodes read the staged copy: the worker's Keras cache does not count,
    and the message gives the command that stages it."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from fruits.storage.weights import weights_key

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # cached here: not enough
    cached = tmp_path / "keras" / "models"
    cached.mkdir(parents=True)
    (cached / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5").write_bytes(b"")
    hook = S3Hook(aws_conn_id="aws_default")
    for bucket_exists in (False, True):
        if bucket_exists:
            aws.s3.create_bucket(Bucket=BUCKET)
        with pytest.raises(ParamError) as caught:
            check_weights_readable("imagenet", "mobilenetv2", hook, staged_in=BUCKET)
        message = str(caught.value)
        uri = f"s3://{BUCKET}/{weights_key('mobilenetv2')}"
        assert message.startswith(
            f"param 'weights': imagenet weights for mobilenetv2 are not staged at {uri}"
        )
        assert f"`make stage-weights FRUITS_BUCKET={BUCKET}`" in message
        assert (f"`python -m fruits.dev.stage_weights --bucket {BUCKET} --models mobilenetv2`"
                in message)  # fmt: skip
    aws.s3.put_object(Bucket=BUCKET, Key=weights_key("mobilenetv2"), Body=b"h5")
    check_weights_readable("imagenet", "mobilenetv2", hook, staged_in=BUCKET)


def test_keras_cannot_run_on_the_cloud_nodes():
    from fruits.params import check_runtime_on_nodes

    for runtime in ("auto", "litert"):
        check_runtime_on_nodes(runtime)
    with pytest.raises(ParamError, match=r"param 'runtime': keras cannot run on the emr and ec2"):
        check_runtime_on_nodes("keras")
