"""Cloud runs load the model ``make stage-weights`` converted (``dag.test()`` on moto):
featurize gets ``--model-file``, and a run whose model, weights and size were never
converted -- or that asks for Keras on nodes that have none -- fails at
``validate_params``, naming the command, before any cluster."""

from __future__ import annotations

import pytest
from dag_support import BUCKET, logical, task_states

from fruits.dev.sample_batch import write_batch

pytestmark = pytest.mark.usefixtures("airflow_db")

DATE = "2026-11-24"
CONF = {"weights": "random", "image_size": 64}


@pytest.fixture
def batch(fruits_env):
    folder = fruits_env / DATE
    write_batch(folder, per_label=1, labels=["Banana", "Kiwi"])
    return folder


def featurize_args(aws) -> list[str]:
    (cluster,) = aws.clusters()
    steps = aws.emr.list_steps(ClusterId=cluster["Id"])["Steps"][::-1]
    return steps[0]["Config"]["Args"]


def test_an_emr_run_s_featurize_loads_the_staged_converted_model(
    load_dag, batch, aws, emr_steps, staged_model
):
    uri = staged_model()  # the same call cloud_models made: unchanged
    emr_steps("complete")
    dag_run = load_dag("emr").test(logical_date=logical(DATE), run_conf=CONF)
    assert str(dag_run.state) == "success", task_states(dag_run)
    args = featurize_args(aws)
    assert args[args.index("--model-file") + 1] == uri
    assert uri.startswith(f"s3://{BUCKET}/models/mobilenetv2-64-") and uri.endswith(".tflite")
    assert args[args.index("--runtime") + 1] == "auto"  # featurize: litert, given a file


def fails_at_validate_params(dag, aws, capfd, conf) -> str:
    dag_run = dag.test(logical_date=logical(DATE), run_conf=conf)
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert states["validate_params"] == "failed"
    assert states["create_bucket"] == states["create_job_flow"] == "upstream_failed"
    assert aws.clusters() == []
    assert aws.ec2.describe_instances()["Reservations"] == []
    return capfd.readouterr().out


@pytest.mark.parametrize("compute", ["emr", "ec2"])
def test_a_model_never_converted_fails_the_run_naming_the_command(
    load_dag, batch, aws, staged_wheels, staged_model, capfd, compute
):
    staged_wheels()
    staged_model("mobilenet", 128, content=b"tflite")  # another size's: does not count
    out = fails_at_validate_params(load_dag(compute), aws, capfd, {**CONF, "model": "mobilenet"})
    assert "no converted model for mobilenet@64 with weights random at " in out
    assert (f"`make stage-weights FRUITS_BUCKET={BUCKET} MODELS=mobilenet SIZES=64 "
            "WEIGHTS=random`") in out  # fmt: skip
    assert aws.keys("code/") == []


def test_keras_on_the_cloud_nodes_fails_the_run_at_once(load_dag, batch, aws, capfd):
    out = fails_at_validate_params(load_dag("ec2"), aws, capfd, {**CONF, "runtime": "keras"})
    assert "param 'runtime': keras cannot run on the emr and ec2 nodes" in out
