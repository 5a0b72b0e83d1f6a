"""The run's steps: featurize then reduce, as EMR runs them and as the local cluster reads them."""

from __future__ import annotations

import pytest
from dag_support import BUCKET, CODE

from fruits.clusters.common.spark_steps import build_steps, localize

RUN = {"model": "vgg16", "runtime": "keras", "image_size": 96, "variance": 0.9}
KEY = "manual__2026-11-24T00-00-00-00-00-0a1b2c3d"  # plan_run's run key


def test_steps_run_featurize_then_reduce_on_the_batch():
    featurize, reduce = build_steps(
        bucket=BUCKET, batch="2026-11-24", run_key=KEY, code=CODE, run=RUN
    )
    for step in (featurize, reduce):
        assert step["ActionOnFailure"] == "CANCEL_AND_WAIT"
        assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
        args = step["HadoopJarStep"]["Args"]
        assert args[:5] == [
            "spark-submit",
            "--deploy-mode",
            "cluster",
            "--py-files",
            CODE["py_files"],
        ]
    f_args, r_args = featurize["HadoopJarStep"]["Args"], reduce["HadoopJarStep"]["Args"]
    # the run's own staging prefix, never the published runs/batch=<date>/
    run = f"s3://{BUCKET}/runs/_staging/batch=2026-11-24/{KEY}/"
    assert f_args[5:] == [
        CODE["featurize"],
        "--input", f"s3://{BUCKET}/raw/batch=2026-11-24/",
        "--name-input-as", f"s3://{BUCKET}/raw/batch=2026-11-24/",
        "--output", run + "features/",
        "--rejected", run + "rejected/",
        "--model", "vgg16",
        "--runtime", "keras",
        "--weights", CODE["weights"],
        "--image-size", "96",
        # live progress, which wait_for_step logs (fruits.progress)
        "--progress", run + "progress/", "--progress-interval", "15",
    ]  # fmt: skip
    # a run without a runtime gets the jobs' default
    default = build_steps(bucket=BUCKET, batch="2026-11-24", run_key=KEY, code=CODE,
                          run={k: v for k, v in RUN.items() if k != "runtime"})  # fmt: skip
    args = default[0]["HadoopJarStep"]["Args"]
    assert args[args.index("--runtime") + 1] == "auto"
    assert r_args[5:] == [
        CODE["reduce"],
        "--input", run + "features/",
        "--output", run + "pca/",
        "--report", run + "report/",
        "--variance", "0.9",
        "--rejected", run + "rejected/",
        "--progress", run + "progress/", "--progress-interval", "15",
    ]  # fmt: skip


def test_local_reading_of_the_steps(tmp_path):
    steps = build_steps(bucket=BUCKET, batch="2026-11-24", run_key=KEY, code=CODE, run=RUN)
    local = localize(
        steps,
        master_url="spark://127.0.0.1:7123",
        spark_submit="/bin/spark-submit",
        s3_root=tmp_path,
    )
    featurize, reduce = local.commands
    assert featurize[:3] == ["/bin/spark-submit", "--master", "spark://127.0.0.1:7123"]
    assert (
        "cluster" not in featurize and featurize[featurize.index("--deploy-mode") + 1] == "client"
    )
    root = tmp_path / BUCKET
    assert featurize[featurize.index("--input") + 1] == str(root / "raw" / "batch=2026-11-24")
    # the images are read from the staged copy and named by their s3:// URIs
    named = featurize[featurize.index("--name-input-as") + 1]
    assert named == f"s3://{BUCKET}/raw/batch=2026-11-24/"
    assert [a for a in featurize + reduce if a.startswith("s3://")] == [named]
    # inputs: code, weights, raw batch; never an output of an earlier step
    assert set(local.inputs) == {
        CODE["py_files"],
        CODE["featurize"],
        CODE["reduce"],
        CODE["weights"],
        f"s3://{BUCKET}/raw/batch=2026-11-24/",
    }
    run = f"s3://{BUCKET}/runs/_staging/batch=2026-11-24/{KEY}/"
    outputs = ("features", "rejected", "pca", "report", "progress")
    assert set(local.outputs) == {run + n + "/" for n in outputs}
    assert reduce[reduce.index("--input") + 1] == str(local.outputs[run + "features/"])
    assert reduce[reduce.index("--rejected") + 1] == str(local.outputs[run + "rejected/"])
    progress = str(local.outputs[run + "progress/"])  # both steps report to one folder
    assert featurize[featurize.index("--progress") + 1] == progress
    assert reduce[reduce.index("--progress") + 1] == progress
    with pytest.raises(ValueError, match="only spark-submit"):
        localize(
            [{"Name": "x", "HadoopJarStep": {"Jar": "s3://b/x.jar", "Args": ["java"]}}],
            master_url="spark://h:1",
            spark_submit="s",
            s3_root=tmp_path,
        )


def test_local_steps_are_handed_the_clusters_properties_file(tmp_path):
    """The local cluster's secret reaches every driver as ``--properties-file``, not
    through ``SPARK_CONF_DIR`` (which would keep its JVMs from Spark's class archive)."""
    steps = build_steps(bucket=BUCKET, batch="2026-11-24", run_key=KEY, code=CODE, run=RUN)
    secret = tmp_path / "conf" / "spark.properties"
    local = localize(steps, master_url="spark://127.0.0.1:7123", spark_submit="/bin/spark-submit",
                     s3_root=tmp_path, properties_file=secret)  # fmt: skip
    for argv in local.commands:
        assert argv[1:5] == ["--master", "spark://127.0.0.1:7123", "--properties-file", str(secret)]
    plain = localize(steps, master_url="spark://h:1", spark_submit="s", s3_root=tmp_path)
    assert not any("--properties-file" in argv for argv in plain.commands)


def test_a_cloud_run_s_featurize_loads_its_converted_model():
    """validate_params' ``model_file`` becomes ``--model-file`` (the nodes never convert);
    without one (the local backend, whose driver converts) there is no such flag."""
    model_file = f"s3://{BUCKET}/models/vgg16-96-0123456789abcdef01234567.tflite"
    featurize, _ = build_steps(bucket=BUCKET, batch="2026-11-24", run_key=KEY, code=CODE,
                               run={**RUN, "model_file": model_file})  # fmt: skip
    args = featurize["HadoopJarStep"]["Args"]
    assert args[args.index("--model-file") + 1] == model_file
    assert args[args.index("--weights") + 1] == CODE["weights"]  # named in the metadata
    plain, _ = build_steps(bucket=BUCKET, batch="2026-11-24", run_key=KEY, code=CODE, run=RUN)
    assert "--model-file" not in plain["HadoopJarStep"]["Args"]


def test_a_localized_converted_model_is_staged_with_its_manifest(tmp_path):
    """featurize reads ``<name>.json`` beside its ``--model-file``: staged with it."""
    model_file = f"s3://{BUCKET}/models/vgg16-96-0123456789abcdef01234567.tflite"
    steps = build_steps(bucket=BUCKET, batch="2026-11-24", run_key=KEY, code=CODE,
                        run={**RUN, "model_file": model_file})  # fmt: skip
    local = localize(steps, master_url="local[2]", spark_submit="s", s3_root=tmp_path)
    manifest = model_file.removesuffix(".tflite") + ".json"
    assert local.inputs[model_file].name == "vgg16-96-0123456789abcdef01234567.tflite"
    assert local.inputs[manifest] == local.inputs[model_file].with_suffix(".json")


def test_an_int8_run_s_featurize_says_int8_and_an_fp32_one_keeps_its_steps():
    int8 = {**RUN, "model": "mobilenet", "runtime": "auto", "precision": "int8"}
    featurize, _ = build_steps(bucket=BUCKET, batch="2026-11-24", run_key=KEY, code=CODE,
                               run=int8)  # fmt: skip
    args = featurize["HadoopJarStep"]["Args"]
    assert args[args.index("--precision") + 1] == "int8"
    for run in (RUN, {**RUN, "precision": "fp32"}):  # the jobs' default: no flag
        plain, _ = build_steps(bucket=BUCKET, batch="2026-11-24", run_key=KEY, code=CODE,
                               run=run)  # fmt: skip
        assert "--precision" not in plain["HadoopJarStep"]["Args"]
