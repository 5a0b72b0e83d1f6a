"""The ``ec2`` cluster's lifecycle, task by task against moto's server: the launch
returns once instances exist (and ``on_kill`` ends them), the ready sensor's rules, the
teardown by the cluster's tag (every attempt's instances, NotFound tolerated), and no
task deferred when ``[operators] default_deferrable`` is on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from dag_support import BUCKET, ROOT

from fruits.clusters.ec2.ready_sensor import ready_for, why_not_ready

CLUSTER = "ec2-manual-1-ab12cd34"


def launch(aws, cluster: str, role: str = "primary", count: int = 1, attempt: str = "1-aa"):
    tags = [{"Key": "project", "Value": "fruits-pipeline"},
            {"Key": "fruits:cluster-id", "Value": cluster},
            {"Key": "fruits:role", "Value": role},
            {"Key": "fruits:attempt", "Value": attempt}]  # fmt: skip
    spec = [{"ResourceType": "instance", "Tags": tags}]
    got = aws.ec2.run_instances(ImageId="ami-12c6146b", MinCount=count, MaxCount=count,
                                TagSpecifications=spec)  # fmt: skip
    return [i["InstanceId"] for i in got["Instances"]]


def states(aws, ids: list[str]) -> dict[str, str]:
    found = aws.ec2.describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: i["State"]["Name"] for r in found for i in r["Instances"]}


# --- remove_cluster ----------------------------------------------------------------------


def test_the_teardown_terminates_every_attempts_instances_by_the_cluster_tag(aws):
    from fruits.clusters.ec2.terminate import Ec2TerminateClusterOperator

    first = launch(aws, CLUSTER, attempt="1-aa") + launch(aws, CLUSTER, "worker", 2, "1-aa")
    second = launch(aws, CLUSTER, attempt="2-bb")  # a cleared create_job_flow's
    theirs = launch(aws, "ec2-another-run")
    op = Ec2TerminateClusterOperator(task_id="remove_cluster", cluster={"cluster_id": CLUSTER},
                                     poll_interval=0)  # fmt: skip
    assert op.execute({}) == sorted(first + second)
    assert set(states(aws, first + second).values()) == {"terminated"}
    assert states(aws, theirs) == {theirs[0]: "running"}
    assert op.execute({}) == []  # nothing left: a no-op, no error


def test_the_teardown_with_no_plan_does_nothing(aws):
    from fruits.clusters.ec2.terminate import Ec2TerminateClusterOperator

    mine = launch(aws, CLUSTER)
    op = Ec2TerminateClusterOperator(task_id="remove_cluster", cluster=None)
    assert op.execute({}) == []
    assert states(aws, mine) == {mine[0]: "running"}


def test_the_teardown_runs_after_a_failed_launch_and_stays_a_teardown():
    from airflow.sdk import TriggerRule

    from fruits.clusters.ec2.terminate import Ec2TerminateClusterOperator

    op = Ec2TerminateClusterOperator(task_id="remove_cluster", cluster={"cluster_id": CLUSTER})
    assert op.as_teardown() is op
    assert op.is_teardown and op.trigger_rule == TriggerRule.ALL_DONE


def test_instances_already_gone_do_not_fail_a_late_teardown(aws):
    from fruits.clusters.ec2.terminate import terminate

    live = launch(aws, CLUSTER, count=2)
    terminate(aws.ec2, [*live, "i-0123456789abcdef0"])  # the last one is unknown: NotFound
    assert set(states(aws, live).values()) == {"terminated"}


def test_other_errors_of_a_termination_are_not_swallowed():
    from botocore.exceptions import ClientError

    from fruits.clusters.ec2.terminate import terminate

    class Refusing:
        def terminate_instances(self, InstanceIds):  # noqa: N803 (boto3's name)
            raise ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "no"}},
                              "TerminateInstances")  # fmt: skip

    with pytest.raises(ClientError, match="UnauthorizedOperation"):
        terminate(Refusing(), ["i-0123456789abcdef0"])


# --- create_job_flow ---------------------------------------------------------------------


class FakeTi:
    try_number = 2

    def __init__(self):
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


def cluster_request() -> dict:
    from fruits.clusters import ec2
    from fruits.settings import load_settings

    settings = load_settings({"FRUITS_COMPUTE": "ec2", "FRUITS_BUCKET": BUCKET,
                              "FRUITS_EC2_WORKER_COUNT": "2"})  # fmt: skip
    code = {"prefix": f"s3://{BUCKET}/code/abc/"}
    return ec2.cluster_request(settings, name="fruits_pipeline test", code=code,
                               run_key="manual-1-ab12cd34", timeout=600)  # fmt: skip


def test_the_launch_returns_once_instances_exist_and_on_kill_ends_them(aws):
    from fruits.clusters.ec2.launch import Ec2LaunchClusterOperator

    aws.iam.create_instance_profile(InstanceProfileName="fruits-ec2-node-role")
    cluster = cluster_request()
    op = Ec2LaunchClusterOperator(task_id="create_job_flow", cluster=cluster)
    ti = FakeTi()
    ids = op.execute({"ti": ti, "run_id": "manual__1"})
    assert len(ids) == 2  # the primary, then the worker moto grants (MinCount=1)
    assert ti.pushed["primary"] == ids[0]
    prefix = ti.pushed["log_prefix"]
    assert prefix.startswith(cluster["log_prefix"] + "attempt-2-")  # the try number
    found = aws.ec2.describe_instances(InstanceIds=ids)["Reservations"]
    tags = [{t["Key"]: t["Value"] for t in i["Tags"]} for r in found for i in r["Instances"]]
    assert {t["fruits:attempt"] for t in tags} == {prefix.rstrip("/").rsplit("attempt-", 1)[1]}
    assert {t["fruits:cluster-id"] for t in tags} == {cluster["cluster_id"]}
    op.on_kill()  # the task was killed: everything launched so far ends
    assert set(states(aws, ids).values()) == {"terminated"}


# --- wait_for_cluster ----------------------------------------------------------------------


def node(instance_id: str, role: str, state: str = "running") -> dict:
    return {"InstanceId": instance_id, "State": {"Name": state},
            "Tags": [{"Key": "fruits:role", "Value": role}]}  # fmt: skip


def test_ready_json_counts_only_from_this_attempts_primary():
    assert ready_for({"instance_id": "i-1", "master_url": "spark://10.0.0.1:7077"}, "i-1")
    assert not ready_for({"instance_id": "i-0earlier"}, "i-1")
    assert not ready_for({"master_url": "spark://10.0.0.1:7077"}, "i-1")  # old format
    assert not ready_for(None, "i-1")


def test_one_lost_worker_of_two_does_not_stop_the_wait():
    found = [node("i-p", "primary"), node("i-w1", "worker", "terminated"), node("i-w2", "worker")]
    assert why_not_ready(found, [], "i-p", workers=2) is None


def test_losing_more_workers_than_a_quorum_allows_fails_at_once():
    found = [node("i-p", "primary"), node("i-w1", "worker", "terminated"),
             node("i-w2", "worker"), node("i-w3", "worker", "shutting-down")]  # fmt: skip
    why = why_not_ready(found, [], "i-p", workers=3)
    assert why.startswith("2 of 3 workers lost, fewer than the quorum of 2 left")


def test_a_workers_bootstrap_failure_counts_as_lost_and_the_primarys_fails_at_once():
    found = [node("i-p", "primary"), node("i-w1", "worker")]
    worker_report = {"role": "worker", "instance_id": "i-w1", "error": "dnf failed",
                     "uri": "s3://b/failed/worker-i-w1.json"}  # fmt: skip
    assert "dnf failed" in why_not_ready(found, [worker_report], "i-p", workers=1)
    primary_report = {**worker_report, "role": "primary", "instance_id": "i-p"}
    assert "the primary node (i-p) failed" in why_not_ready(found, [primary_report], "i-p", 4)


def test_a_gone_primary_fails_the_wait():
    found = [node("i-p", "primary", "terminated"), node("i-w1", "worker")]
    assert why_not_ready(found, [], "i-p", workers=1).startswith("the primary instance i-p")


# --- default_deferrable ------------------------------------------------------------------


def test_no_ec2_task_defers_when_deferrable_is_the_default(tmp_path):
    """With ``[operators] default_deferrable = True`` (read when the provider's module is
    imported: a fresh interpreter), add_steps still runs in its worker and returns the
    step ids; a deferred SsmRunCommandOperator would return the command id."""
    script = """
import json
from airflow.sdk import DAG
from fruits.clusters.ec2 import cluster_tasks
from fruits.settings import load_settings

plan = {"cluster": {}, "steps": [], "timeout": 60, "progress": ""}
with DAG("deferrable_check", schedule=None):
    tasks = cluster_tasks(load_settings({"FRUITS_COMPUTE": "ec2", "FRUITS_BUCKET": "b"}), plan)
print(json.dumps({t.task_id: getattr(t, "deferrable", False)
                  for t in (*tasks.in_order, tasks.teardown)}))
"""
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
           "PYTHONPATH": str(ROOT / "plugins")}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    deferrable = json.loads(done.stdout.strip().splitlines()[-1])
    assert deferrable == {
        "create_job_flow": False, "wait_for_cluster": False, "add_steps": False,
        "wait_for_step": False, "remove_cluster": False,
    }  # fmt: skip
