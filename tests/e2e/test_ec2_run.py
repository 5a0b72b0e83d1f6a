"""Whole runs of the ``ec2`` backend with ``dag.test()`` against moto's server.

moto launches instances that boot nothing and records SSM commands that run nothing, so
the ``ec2_nodes`` fixture plays the nodes through S3, as they would, under the log
prefix their user data names: the primary's ``ready.json`` (or a bootstrap's ``failed/``
report), then, once the SSM command started the step runner, its ``runner.json`` and the
steps' state files; each step's real spark-submit runs on this host and its outputs go
to the step's s3:// URIs. The node programs themselves run for real in
tests/plugins/fruits/clusters/ec2/node/test_node.py."""

from __future__ import annotations

import json

import pytest
from dag_support import (
    BUCKET,
    EARLIER_BATCH,
    NODE_ERROR,
    RUNNER_ERROR,
    STEP_ERROR,
    assert_real_outputs,
    failed_at,
    logical,
    snapshot,
    task_states,
    write_test_batch,
)

pytestmark = pytest.mark.usefixtures("airflow_db")

DATE = EARLIER_BATCH
CONF = {"weights": "random", "image_size": 64}


@pytest.fixture
def batch(fruits_env, monkeypatch):
    monkeypatch.setenv("FRUITS_EC2_WORKER_COUNT", "2")
    monkeypatch.setenv("FRUITS_EC2_WORKER_SPOT", "true")
    return write_test_batch(fruits_env / DATE, ["Banana", "Pêche"], 2, bad_label="Banana")


def instances(aws) -> list[dict]:
    found = aws.ec2.describe_instances()["Reservations"]
    return [i for r in found for i in r["Instances"]]


def role(instance: dict) -> str:
    return {t["Key"]: t["Value"] for t in instance["Tags"]}["fruits:role"]


def run(dag, conf=CONF):
    return dag.test(logical_date=logical(DATE), run_conf=conf)


def assert_all_terminated(aws) -> list[dict]:
    launched = instances(aws)
    assert launched, "no instance was launched"
    assert {i["State"]["Name"] for i in launched} == {"terminated"}, launched
    return launched


def test_ec2_run_launches_runs_the_steps_over_ssm_and_terminates(
    load_dag, batch, aws, ec2_nodes, capfd, calls
):
    ec2_nodes("ready")
    dag_run = run(load_dag("ec2"))

    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    assert set(states.values()) == {"success"}

    # one on-demand primary and two spot workers, all terminated at the end
    launched = assert_all_terminated(aws)
    primaries = [i for i in launched if role(i) == "primary"]
    workers = [i for i in launched if role(i) == "worker"]
    assert len(primaries) == 1
    assert len(workers) == 1  # moto grants MinCount (1); EC2 up to MaxCount (2), below
    assert "InstanceLifecycle" not in primaries[0]  # the primary is on-demand
    assert {w.get("InstanceLifecycle") for w in workers} == {"spot"}
    for inst in launched:
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags["project"] == "fruits-pipeline"
        assert tags["fruits:cluster-id"].startswith("ec2-")
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        assert not inst.get("KeyName")  # no SSH key pair
    cluster_id = {t["Key"]: t["Value"] for t in primaries[0]["Tags"]}["fruits:cluster-id"]
    # this attempt's nodes report under a prefix of its own: an earlier attempt's
    # ready.json or failed/ report is never read as this one's
    attempt = {t["Key"]: t["Value"] for t in primaries[0]["Tags"]}["fruits:attempt"]
    assert attempt.startswith("1-")
    log = f"logs/ec2/{cluster_id}/attempt-{attempt}/"
    assert json.loads(aws.read(log + "ready.json"))["instance_id"] == primaries[0]["InstanceId"]

    # the workers: MinCount=1, MaxCount=N (the cluster starts at a quorum); a ClientToken
    # per role, so a retried call cannot launch a second set
    primary_call, workers_call = calls["RunInstances"]
    assert (primary_call["MinCount"], primary_call["MaxCount"]) == (1, 1)
    assert (workers_call["MinCount"], workers_call["MaxCount"]) == (1, 2)
    tokens = {primary_call["ClientToken"], workers_call["ClientToken"]}
    assert len(tokens) == 2 and all(0 < len(t) <= 64 for t in tokens)

    # the workers' user data names the primary's address; the primary's names none
    def user_data(inst):
        import base64

        got = aws.ec2.describe_instance_attribute(
            InstanceId=inst["InstanceId"], Attribute="userData"
        )
        return base64.b64decode(got["UserData"]["Value"]).decode()

    address = primaries[0]["PrivateIpAddress"]
    assert all(f"'{address}'" in user_data(w) for w in workers)
    assert address not in user_data(primaries[0])
    assert 'shutdown -h "+$LIFETIME_MINUTES"' in user_data(primaries[0])

    # one SSM command, on the primary only, that starts the step runner
    (request,) = calls["SendCommand"]
    assert request["DocumentName"] == "AWS-RunShellScript"
    assert request["InstanceIds"] == [primaries[0]["InstanceId"]]
    (command,) = aws.ssm.list_commands()["Commands"]  # moto got it too
    assert command["CommandId"]
    (line,) = request["Parameters"]["commands"]
    assert "run-steps" in line and f"s3://{BUCKET}/{log}" in line

    # the steps: spark-submit on the primary's master, s3a:// in and out, local code
    spec = json.loads(aws.read(log + "steps.json"))
    assert [s["name"] for s in spec] == [f"featurize batch={DATE}", f"reduce batch={DATE}"]
    featurize = spec[0]["argv"]
    assert featurize[featurize.index("--master") + 1] == f"spark://{address}:7077"
    assert featurize[featurize.index("--deploy-mode") + 1] == "client"
    assert featurize[featurize.index("--input") + 1] == f"s3a://{BUCKET}/raw/batch={DATE}/"
    assert featurize[featurize.index("--py-files") + 1] == "/opt/fruits/code/fruits_spark.zip"
    # read through s3a; only the name its outputs give the images is s3://, as on EMR
    named = f"s3://{BUCKET}/raw/batch={DATE}/"
    assert featurize[featurize.index("--name-input-as") + 1] == named
    assert [a for a in featurize + spec[1]["argv"] if a.startswith("s3://")] == [named]

    # the code the nodes fetch: the node program, its modules and runner, the same
    # pyspark as here
    import importlib.metadata

    (code_prefix,) = {k.rsplit("/", 1)[0] for k in aws.keys("code/") if k.endswith("node.py")}
    requirements = aws.read(f"{code_prefix}/node-requirements.txt").decode()
    assert f"pyspark=={importlib.metadata.version('pyspark')}" in requirements
    shipped = aws.keys(code_prefix)
    for name in ("node.py", "node_report.py", "node_daemons.py", "node_steps.py", "step_runner.py"):
        assert f"{code_prefix}/{name}" in shipped, name

    # the steps ran for real: the published outputs are the batch's images and bad files
    assert_real_outputs(aws, f"runs/batch={DATE}/", batch, DATE)
    for sid in (s["id"] for s in spec):
        assert json.loads(aws.read(f"{log}steps/{sid}/state.json"))["state"] == "COMPLETED"
    out = capfd.readouterr().out
    assert (
        f"batch {DATE}: {len(batch.good)} images featurized (2 labels), {len(batch.bad)} rejected"
    ) in out


def test_a_failed_step_fails_the_run_with_its_stderr_and_terminates(
    load_dag, batch, aws, ec2_nodes, earlier_outputs, capfd
):
    ec2_nodes("ready", steps="fail")
    dag_run = run(load_dag("ec2"))

    states = failed_at(dag_run, "wait_for_step")
    assert states["remove_cluster"] == "success"  # the teardown ran...
    assert states["summarize_run"] == "upstream_failed"  # ...and the run still failed
    assert_all_terminated(aws)
    out = capfd.readouterr().out
    log = out[out.index("Waiting up to") :]
    assert "FAILED (exit status 1)" in log
    assert STEP_ERROR in log
    assert "INFO SparkContext" not in log
    assert snapshot(aws) == earlier_outputs


def test_a_node_whose_bootstrap_fails_fails_the_run_at_once_and_terminates(
    load_dag, batch, aws, ec2_nodes, earlier_outputs, capfd
):
    ec2_nodes("bootstrap_fails")
    dag_run = run(load_dag("ec2"))

    states = failed_at(dag_run, "wait_for_cluster")
    assert states["create_job_flow"] == "success"  # it returned once the instances existed
    assert states["add_steps"] == "upstream_failed"
    assert states["remove_cluster"] == "success"
    assert_all_terminated(aws)
    out = capfd.readouterr().out
    assert "did not start: the primary node" in out and NODE_ERROR in out
    assert aws.ssm.list_commands()["Commands"] == []
    assert snapshot(aws) == earlier_outputs


def test_a_cluster_that_never_becomes_ready_times_out_and_terminates(
    load_dag, batch, aws, ec2_nodes, earlier_outputs, monkeypatch, capfd
):
    monkeypatch.setenv("FRUITS_EC2_READY_TIMEOUT", "10")
    ec2_nodes("never_ready")
    dag_run = run(load_dag("ec2"))

    failed_at(dag_run, "wait_for_cluster")
    assert_all_terminated(aws)
    out = capfd.readouterr().out
    assert "not ready within 10s" in out and "get-console-output" in out
    assert snapshot(aws) == earlier_outputs


def test_markers_an_earlier_attempt_left_are_not_read_as_this_attempts(
    load_dag, batch, aws, ec2_nodes, earlier_outputs, monkeypatch, capfd
):
    """A rerun of the cluster: an earlier attempt's ready.json at the cluster's prefix,
    and one at this attempt's naming another primary; neither makes it ready."""
    monkeypatch.setenv("FRUITS_EC2_READY_TIMEOUT", "10")
    ec2_nodes("stale")
    dag_run = run(load_dag("ec2"))

    states = failed_at(dag_run, "wait_for_cluster")
    assert states["add_steps"] == "upstream_failed"
    assert aws.ssm.list_commands()["Commands"] == []  # no step ran on a stale cluster
    assert_all_terminated(aws)
    out = capfd.readouterr().out
    assert "not ready within 10s" in out
    assert "is not from this attempt's primary" in out
    assert snapshot(aws) == earlier_outputs


def test_a_crash_after_run_instances_still_terminates_everything(
    load_dag, batch, aws, ec2_nodes, earlier_outputs, monkeypatch
):
    """The workers' RunInstances launches, then the call fails (its answer lost):
    create_job_flow fails with instances it never heard of; remove_cluster still runs and
    finds them by the cluster's tag."""
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    real_call = BaseClient._make_api_call
    launches = []

    def lose_the_second_answer(self, operation, params):
        answer = real_call(self, operation, params)
        if operation == "RunInstances":
            launches.append(answer)
            if len(launches) == 2:
                raise ClientError({"Error": {"Code": "RequestLimitExceeded",
                                             "Message": "answer lost"}}, operation)  # fmt: skip
        return answer

    monkeypatch.setattr(BaseClient, "_make_api_call", lose_the_second_answer)
    ec2_nodes("ready")
    dag_run = run(load_dag("ec2"))

    states = failed_at(dag_run, "create_job_flow")
    assert states["remove_cluster"] == "success"  # a teardown after a failed setup
    launched = assert_all_terminated(aws)
    assert len(launched) == 2  # the primary and the worker moto granted (MinCount)
    assert snapshot(aws) == earlier_outputs


def test_a_step_runner_that_dies_fails_the_run_at_once_with_its_log(
    load_dag, batch, aws, ec2_nodes, earlier_outputs, capfd
):
    import time

    ec2_nodes("ready", steps="runner_dies")
    started = time.monotonic()
    dag_run = run(load_dag("ec2"))

    states = failed_at(dag_run, "wait_for_step")
    assert time.monotonic() - started < 120  # not the steps' timeout
    assert states["remove_cluster"] == "success"
    assert_all_terminated(aws)
    out = capfd.readouterr().out
    assert "the step runner exited (status 1)" in out
    assert RUNNER_ERROR.splitlines()[-1] in out  # the tail of its own log
    assert snapshot(aws) == earlier_outputs


def test_a_step_runner_killed_outright_fails_the_run_once_it_stops_beating(
    load_dag, batch, aws, ec2_nodes, earlier_outputs, monkeypatch, capfd
):
    from fruits.clusters.ec2 import steps

    monkeypatch.setattr(steps, "RUNNER_SILENT", 2)
    ec2_nodes("ready", steps="runner_killed")
    dag_run = run(load_dag("ec2"))

    failed_at(dag_run, "wait_for_step")
    assert_all_terminated(aws)
    out = capfd.readouterr().out
    assert "the step runner has said nothing for" in out
    assert snapshot(aws) == earlier_outputs


def test_a_step_runner_that_never_starts_fails_the_run_with_the_ssm_outcome(
    load_dag, batch, aws, ec2_nodes, earlier_outputs, monkeypatch, capfd
):
    from fruits.clusters.ec2 import steps

    monkeypatch.setattr(steps, "RUNNER_START_GRACE", 2)
    ec2_nodes("ready", steps="runner_never_starts")
    dag_run = run(load_dag("ec2"))

    failed_at(dag_run, "wait_for_step")
    assert_all_terminated(aws)
    out = capfd.readouterr().out
    assert "the step runner never started" in out
    assert "SSM says Success" in out  # moto's; on AWS the command's status and stderr
    assert snapshot(aws) == earlier_outputs


def test_an_ssm_error_fails_the_run_and_terminates(
    load_dag, batch, aws, ec2_nodes, earlier_outputs, monkeypatch, capfd
):
    from airflow.providers.amazon.aws.operators.ssm import SsmRunCommandOperator
    from botocore.exceptions import ClientError

    def refuse(self, context):
        raise ClientError(
            {"Error": {"Code": "InvalidInstanceId", "Message": "Instances not in a valid state"}},
            "SendCommand",
        )

    monkeypatch.setattr(SsmRunCommandOperator, "execute", refuse)
    ec2_nodes("ready")
    dag_run = run(load_dag("ec2"))

    states = failed_at(dag_run, "add_steps")
    assert states["remove_cluster"] == "success"
    assert_all_terminated(aws)
    assert "Instances not in a valid state" in capfd.readouterr().out
    assert snapshot(aws) == earlier_outputs


def test_the_next_run_terminates_what_a_killed_run_left_running(aws, fruits_env):
    """clear_leftovers (run while holding the cluster slot, before launching): every live
    instance of this pipeline's bucket is a leftover; other buckets' are not ours."""
    from fruits.clusters import ec2
    from fruits.settings import load_settings

    def launch(bucket: str, cluster: str) -> str:
        tags = [{"Key": "project", "Value": "fruits-pipeline"},
                {"Key": "fruits:bucket", "Value": bucket},
                {"Key": "fruits:cluster-id", "Value": cluster}]  # fmt: skip
        got = aws.ec2.run_instances(ImageId="ami-12c6146b", MinCount=2, MaxCount=2,
                                    TagSpecifications=[{"ResourceType": "instance",
                                                        "Tags": tags}])  # fmt: skip
        return [i["InstanceId"] for i in got["Instances"]]

    killed = launch(BUCKET, "ec2-killed-run")
    others = launch("someone-elses-bucket", "ec2-theirs")
    assert ec2.clear_leftovers(load_settings()) == {"ec2-killed-run": sorted(killed)}

    def state(ids):
        found = aws.ec2.describe_instances(InstanceIds=ids)["Reservations"]
        return {i["State"]["Name"] for r in found for i in r["Instances"]}

    assert state(killed) == {"terminated"}
    assert state(others) == {"running"}
    assert ec2.clear_leftovers(load_settings()) == {}  # nothing left: a no-op
