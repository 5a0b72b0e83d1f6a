"""The DAG as Airflow parses it, under each backend: no import errors, one task graph,
the teardown, the schedule, the trigger form; and a DAG file that only declares."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest
from dag_support import ROOT, logical

EXPECTED_UPSTREAM = {
    "validate_params": set(),
    "find_batch": {"validate_params"},
    "create_bucket": {"find_batch"},
    "upload_batch": {"create_bucket", "validate_params"},
    "upload_code": {"create_bucket", "validate_params"},
    "plan_run": {"validate_params", "find_batch", "upload_batch", "upload_code"},
    "wait_for_cluster_slot": {"plan_run"},
    "clear_leftovers": {"validate_params", "plan_run", "wait_for_cluster_slot"},
    "create_job_flow": {"plan_run", "clear_leftovers"},
    "add_steps": {"create_job_flow", "plan_run"},
    "wait_for_step": {"add_steps", "create_job_flow", "plan_run"},
    "remove_cluster": {"create_job_flow", "wait_for_step"},
    "publish_batch": {"validate_params", "plan_run", "wait_for_step"},
    "summarize_run": {"validate_params", "publish_batch"},
}
BACKENDS = ("local", "emr", "ec2", "serverless")
# ec2 launches, then waits in a sensor until the cluster is ready (no worker slot held
# while the nodes boot); its teardown takes the plan's cluster tag, not create's ids
EXPECTED_UPSTREAM_EC2 = {
    **EXPECTED_UPSTREAM,
    "wait_for_cluster": {"create_job_flow", "plan_run"},
    "add_steps": {"create_job_flow", "wait_for_cluster", "plan_run"},
    "remove_cluster": {"create_job_flow", "wait_for_cluster", "wait_for_step", "plan_run"},
}
# serverless submits and waits for each job in turn; its teardown, too, takes the plan
EXPECTED_UPSTREAM_SERVERLESS = {
    **EXPECTED_UPSTREAM,
    "wait_for_featurize": {"add_steps", "create_job_flow", "plan_run"},
    "add_reduce_step": {"wait_for_featurize", "create_job_flow", "plan_run"},
    "wait_for_step": {"add_reduce_step", "create_job_flow", "plan_run"},
    "remove_cluster": {"create_job_flow", "wait_for_step", "plan_run"},
}
EXPECTED = {"ec2": EXPECTED_UPSTREAM_EC2, "serverless": EXPECTED_UPSTREAM_SERVERLESS}
SETUPS = {"local": ["create_job_flow"], "emr": ["create_job_flow"],
          "ec2": ["create_job_flow", "wait_for_cluster"],
          "serverless": ["create_job_flow"]}  # fmt: skip
# the sensors a backend waits in besides wait_for_step
WAITS = {"ec2": ["wait_for_cluster"], "serverless": ["wait_for_featurize"]}


@pytest.mark.parametrize("compute", ["local", "emr", "ec2", "serverless", "local"])  # any order
def test_dag_loads_without_import_errors(load_dag, compute):
    dag = load_dag(compute)
    assert f"compute:{compute}" in dag.tags


@pytest.mark.parametrize("compute", BACKENDS)
def test_task_graph_is_the_same_for_every_backend(load_dag, compute):
    dag = load_dag(compute)
    graph = {task.task_id: set(task.upstream_task_ids) for task in dag.tasks}
    assert graph == EXPECTED.get(compute, EXPECTED_UPSTREAM)


@pytest.mark.parametrize("compute", BACKENDS)
def test_remove_cluster_is_the_teardown_of_create_job_flow(load_dag, compute):
    from airflow.sdk import TriggerRule

    dag = load_dag(compute)
    create, remove = dag.get_task("create_job_flow"), dag.get_task("remove_cluster")
    assert create.is_setup and not create.is_teardown
    assert remove.is_teardown and not remove.is_setup
    # ec2's runs even when create_job_flow failed after launching (it finds the
    # instances by the cluster's tag); a teardown never decides the run's state
    all_done = compute in ("ec2", "serverless")
    rule = TriggerRule.ALL_DONE if all_done else TriggerRule.ALL_DONE_SETUP_SUCCESS
    assert remove.trigger_rule == rule
    assert "create_job_flow" in remove.upstream_task_ids
    # publishing must not depend on the teardown alone (it would run after a failure)
    assert "wait_for_step" in dag.get_task("publish_batch").upstream_task_ids
    assert "remove_cluster" not in dag.get_task("publish_batch").upstream_task_ids
    # no other task is a setup or a teardown
    assert [t.task_id for t in dag.tasks if t.is_setup or t.is_teardown] == [
        *SETUPS[compute],
        "remove_cluster",
    ]


@pytest.mark.parametrize("compute", BACKENDS)
def test_publishing_announces_the_pca_asset(load_dag, compute):
    dag = load_dag(compute)
    (asset,) = dag.get_task("publish_batch").outlets
    assert asset.name == "fruits_pca" and asset.uri.endswith("/runs/pca")
    # nothing else announces it: downstream DAGs see one event per published batch
    assert [t.task_id for t in dag.tasks if t.outlets] == ["publish_batch"]


def test_every_backend_has_a_module_and_the_dag_file_no_backend_code():
    from fruits.settings import COMPUTE_BACKENDS

    assert COMPUTE_BACKENDS == BACKENDS
    source = (ROOT / "dags" / "fruits_pipeline.py").read_text()
    code = source[source.index('"""', 3) + 3 :]  # what follows the module docstring
    for name in BACKENDS:
        assert f'"{name}"' not in code, name  # no `if compute == "emr"` branch
    assert "Emr" not in code and "EC2" not in code and "local_cluster" not in code
    for name in BACKENDS:
        module = importlib.import_module(f"fruits.clusters.{name}")
        assert {"REMOTE", "code_files", "cluster_request", "clear_leftovers",
                "cluster_tasks"} <= set(vars(module)), name  # fmt: skip


@pytest.mark.parametrize("compute", BACKENDS)
def test_no_task_holds_a_worker_slot_while_the_steps_run(load_dag, monkeypatch, compute):
    from airflow.sdk import BaseSensorOperator

    monkeypatch.setenv("FRUITS_POKE_INTERVAL", "60")
    dag = load_dag(compute)
    sensors = ("wait_for_step", "wait_for_cluster_slot", *WAITS.get(compute, []))
    for task_id in sensors:
        sensor = dag.get_task(task_id)
        assert isinstance(sensor, BaseSensorOperator)
        assert sensor.mode == "reschedule", task_id


@pytest.mark.parametrize("compute", BACKENDS)
def test_quick_looks_poke_instead_of_rescheduling(load_dag, monkeypatch, compute):
    """Looks seconds apart (make demo, make ui) poke: a rescheduled sensor looked at
    that often is failed by a scheduler race on a busy host (apache/airflow#71172)."""
    monkeypatch.setenv("FRUITS_POKE_INTERVAL", "5")
    dag = load_dag(compute)
    for task_id in ("wait_for_step", "wait_for_cluster_slot", *WAITS.get(compute, [])):
        sensor = dag.get_task(task_id)
        # the local steps' state files are read every second, their progress in S3 every 5 s
        local_steps = compute == "local" and task_id == "wait_for_step"
        assert (sensor.mode, sensor.poke_interval) == ("poke", 1 if local_steps else 5), task_id
        if local_steps:
            assert sensor.progress_interval == 5


def test_ec2_backend_uses_the_providers_operators(load_dag):
    from airflow.providers.amazon.aws.operators.ec2 import (
        EC2CreateInstanceOperator,
        EC2TerminateInstanceOperator,
    )
    from airflow.providers.amazon.aws.operators.ssm import SsmRunCommandOperator

    dag = load_dag("ec2")
    assert isinstance(dag.get_task("create_job_flow"), EC2CreateInstanceOperator)
    assert isinstance(dag.get_task("add_steps"), SsmRunCommandOperator)
    assert dag.get_task("add_steps").document_name == "AWS-RunShellScript"
    assert isinstance(dag.get_task("remove_cluster"), EC2TerminateInstanceOperator)


def test_emr_backend_uses_the_providers_operators(load_dag):
    from airflow.providers.amazon.aws.operators.emr import (
        EmrAddStepsOperator,
        EmrCreateJobFlowOperator,
        EmrTerminateJobFlowOperator,
    )
    from airflow.providers.amazon.aws.operators.s3 import S3CreateBucketOperator
    from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor

    dag = load_dag("emr")
    assert isinstance(dag.get_task("create_bucket"), S3CreateBucketOperator)
    assert isinstance(dag.get_task("create_job_flow"), EmrCreateJobFlowOperator)
    assert isinstance(dag.get_task("add_steps"), EmrAddStepsOperator)
    assert isinstance(dag.get_task("wait_for_step"), EmrStepSensor)
    assert isinstance(dag.get_task("remove_cluster"), EmrTerminateJobFlowOperator)


def test_serverless_backend_uses_the_providers_operators(load_dag):
    from airflow.providers.amazon.aws.operators.emr import (
        EmrServerlessCreateApplicationOperator,
        EmrServerlessDeleteApplicationOperator,
        EmrServerlessStartJobOperator,
    )
    from airflow.providers.amazon.aws.sensors.emr import EmrServerlessJobSensor

    dag = load_dag("serverless")
    assert isinstance(dag.get_task("create_job_flow"), EmrServerlessCreateApplicationOperator)
    for submit, wait in (("add_steps", "wait_for_featurize"), ("add_reduce_step", "wait_for_step")):
        assert isinstance(dag.get_task(submit), EmrServerlessStartJobOperator)
        assert dag.get_task(submit).wait_for_completion is False  # a sensor waits
        assert isinstance(dag.get_task(wait), EmrServerlessJobSensor)
    remove = dag.get_task("remove_cluster")
    assert isinstance(remove, EmrServerlessDeleteApplicationOperator) and remove.force_stop
    assert not any(getattr(t, "deferrable", False) for t in dag.tasks)  # no aiobotocore


@pytest.mark.parametrize("compute", BACKENDS)
def test_schedule_retries_and_tags(load_dag, compute):
    dag = load_dag(compute)
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert {"fruits", "spark"} <= set(dag.tags)
    from airflow.serialization.encoders import coerce_to_core_timetable

    assert coerce_to_core_timetable(dag.timetable).summary in ("@daily", "0 0 * * *")
    assert dag.default_args["retries"] >= 1
    for task in dag.tasks:
        if task.task_id in ("create_job_flow", "wait_for_cluster", "add_steps",
                            "wait_for_featurize", "add_reduce_step"):  # fmt: skip
            # a retry would create a second cluster, or add the steps twice
            assert task.retries == 0, task.task_id
        else:
            assert task.retries >= 1, task.task_id


def test_daily_runs_cover_the_day_that_ended(load_dag):
    """The run after midnight UTC has the day that ended as its logical date (= its batch)."""
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = coerce_to_core_timetable(load_dag("local").timetable)
    info = timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(logical("2026-11-22"), logical("2026-11-23")),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    assert info.logical_date == logical("2026-11-23")
    assert info.run_after == logical("2026-11-24")


def test_trigger_form_has_typed_bounded_documented_params(load_dag):
    dag = load_dag("local")
    schema = {name: dag.params.get_param(name).schema for name in dag.params}
    assert set(schema) == {
        "batch_date", "source", "model", "runtime", "precision", "weights", "variance",
        "image_size",
    }  # fmt: skip
    assert schema["batch_date"]["format"] == "date"
    source = dag.params.get_param("source")
    assert source.resolve("s3://landing-zone/fruits") == "s3://landing-zone/fruits"
    assert source.resolve(None) is None  # empty: FRUITS_INCOMING
    assert schema["model"]["enum"] == ["mobilenetv2", "mobilenet", "vgg16"]
    assert schema["runtime"]["enum"] == ["auto", "litert", "keras"]
    assert schema["precision"]["enum"] == ["fp32", "int8"]
    assert schema["variance"]["type"] == "number"
    assert schema["variance"]["exclusiveMinimum"] == 0 and schema["variance"]["maximum"] == 1
    assert schema["image_size"]["type"] == "integer"
    assert (schema["image_size"]["minimum"], schema["image_size"]["maximum"]) == (32, 1024)
    for name in schema:
        assert dag.params.get_param(name).description, f"{name} has no description"
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        dag.params.get_param("variance").resolve(1.5)
    with pytest.raises(ParamValidationError):
        dag.params.get_param("model").resolve("resnet50")
    with pytest.raises(ParamValidationError):
        dag.params.get_param("batch_date").resolve("24/11/2026")
    with pytest.raises(ParamValidationError):
        source.resolve("landing/relative")


def test_dag_file_only_declares():
    """Parsing imports no TensorFlow, PySpark or boto3 clients and opens no connection."""
    code = textwrap.dedent(
        f"""
        import socket, sys
        def refuse(*args, **kwargs):
            raise AssertionError("network access while parsing the DAG")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        import boto3.session
        made = []
        original = boto3.session.Session.client
        boto3.session.Session.client = lambda *a, **k: made.append(a) or original(*a, **k)
        from airflow.dag_processing.dagbag import DagBag
        for compute in ("local", "emr", "ec2", "serverless"):
            import os
            os.environ["FRUITS_COMPUTE"] = compute
            bag = DagBag(dag_folder={str(ROOT / "dags")!r})
            assert not bag.import_errors, bag.import_errors
            assert "fruits_pipeline" in bag.dags
        heavy = [m for m in ("tensorflow", "keras", "pyspark", "pandas") if m in sys.modules]
        assert not heavy, heavy
        assert not made, made
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
