"""The ``ec2`` backend: Spark standalone on EC2 instances the pipeline manages itself.

- ``create_job_flow`` (:class:`~.launch.Ec2LaunchClusterOperator`, the provider's
  ``EC2CreateInstanceOperator``): one on-demand primary, then up to N workers
  (``MinCount=1``, spot if asked) whose user data names the primary's private IP; it
  returns the instance ids, primary first, the moment they exist. Each execution is an
  attempt (:mod:`.attempt`): its nodes report under ``<log prefix>attempt-<n>-<hex>/``
  (the XCom ``log_prefix``), its ``RunInstances`` calls carry a ``ClientToken``. Each
  node installs Java, Python and the pinned job requirements, starts Spark
  (``node/user_data.sh``, ``node/node.py``); the primary writes ``ready.json`` (with its
  instance id) once a quorum of the workers joined
  (:func:`fruits.clusters.common.standalone.quorum`), or ``failed/<node>.json``.
  What it launches: :mod:`.request`.
- ``wait_for_cluster`` (:class:`~.ready_sensor.Ec2ClusterReadySensor`, reschedule mode
  when the looks are a minute apart): until ``ready.json`` names this attempt's primary;
  fails at once if the primary failed or is gone, or too many workers are lost.
- ``add_steps`` (:class:`~.steps.Ec2AddStepsOperator`, the provider's
  ``SsmRunCommandOperator``): the run's EMR-format steps as ``spark-submit --master
  spark://<primary>:7077`` lines reading and writing ``s3a://``, written to
  ``<log prefix>steps.json``; one SSM command on the primary starts ``node.py
  run-steps``, which runs them in order and says in ``runner.json`` that it runs and
  when it exited (its own log beside, ``runner.log``). Never deferred.
- ``wait_for_step`` (:class:`~.steps.Ec2StepsSensor`, reschedule mode): reads the state
  files the runner writes under ``<log prefix>steps/<id>/`` (as EMR does under its
  LogUri); a failed step fails the run with its stderr; nodes that are gone, or a step
  runner that exited or never started, fail it at once.
- ``remove_cluster`` (:class:`~.terminate.Ec2TerminateClusterOperator`, the provider's
  ``EC2TerminateInstanceOperator``): terminates every instance tagged with the cluster's
  id (every attempt's), whatever the other tasks returned; it runs after any failure,
  ``create_job_flow``'s included (trigger rule ``all_done``).

No SSH and no key pair: IMDSv2 only, encrypted volumes, the instance profile for S3,
SSM for commands. ``InstanceInitiatedShutdownBehavior=terminate`` plus a shutdown timer
in the user data end the instances if Airflow never does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fruits.clusters import ClusterTasks, step_sensor_args
from fruits.settings import Settings

__all__ = [
    "REMOTE",
    "clear_leftovers",
    "cluster_request",
    "cluster_tasks",
    "code_files",
    "preflight",
]

REMOTE = True  # the nodes read code and weights from code/<version>/


def code_files() -> dict[str, bytes]:
    """The node program (its modules and the step runner, side by side as node.py finds
    them) and the nodes' requirements, in code/<version>/."""
    from fruits.clusters.ec2.user_data import node_program
    from fruits.storage.code_bundle import node_requirements

    return {
        **{path.name: path.read_bytes() for path in node_program()},
        "node-requirements.txt": node_requirements().encode(),
    }


def cluster_request(
    settings: Settings, *, name: str, code: Mapping[str, str], run_key: str, timeout: int
) -> dict[str, Any]:
    from fruits.clusters.ec2 import request

    return request.cluster_request(settings, name=name, code=code, run_key=run_key, timeout=timeout)


def clear_leftovers(settings: Settings) -> dict[str, list[str]]:
    from fruits.clusters.ec2 import terminate

    return terminate.clear_leftovers(settings)


def preflight(settings: Settings, run: dict) -> None:
    """The subnet and security group, if set: in the connection's region, one VPC; the
    staged wheels of the nodes' requirements (``make stage-wheels``); a warning if the
    account's default EBS key is a customer-managed key (KMS grants, :mod:`.kms`)."""
    import logging

    from fruits.clusters.common.preflight import ec2_client, ec2_network, staged_wheels
    from fruits.clusters.ec2.kms import default_key_warning

    ec2_network(settings)
    staged_wheels(settings, "ec2")  # the nodes install offline from them
    warning = default_key_warning(ec2_client(settings.aws_conn_id))
    if warning:
        logging.getLogger(__name__).warning("%s", warning)


def cluster_tasks(settings: Settings, plan: Any) -> ClusterTasks:
    from fruits.clusters.ec2.launch import Ec2LaunchClusterOperator
    from fruits.clusters.ec2.ready_sensor import WAIT_FOR_CLUSTER_ID, Ec2ClusterReadySensor
    from fruits.clusters.ec2.steps import Ec2AddStepsOperator, Ec2StepsSensor
    from fruits.clusters.ec2.terminate import Ec2TerminateClusterOperator

    create_job_flow = Ec2LaunchClusterOperator(
        task_id="create_job_flow",
        cluster=plan["cluster"],
        aws_conn_id=settings.aws_conn_id,
    )
    log_prefix = create_job_flow.output["log_prefix"]  # this attempt's
    wait_for_cluster = Ec2ClusterReadySensor(
        task_id=WAIT_FOR_CLUSTER_ID,
        cluster=plan["cluster"],
        instance_ids=create_job_flow.output,
        log_prefix=log_prefix,
        timeout=settings.ec2.ready_timeout,
        poke_interval=settings.poke_interval,
        mode=settings.sensor_mode,
        aws_conn_id=settings.aws_conn_id,
    )
    add_steps = Ec2AddStepsOperator(
        task_id="add_steps",
        cluster=plan["cluster"],
        instance_ids=create_job_flow.output,
        log_prefix=log_prefix,
        steps=plan["steps"],
        aws_conn_id=settings.aws_conn_id,
    )
    wait_for_step = Ec2StepsSensor(
        task_id="wait_for_step",
        cluster=plan["cluster"],
        instance_ids=create_job_flow.output,
        log_prefix=log_prefix,
        runner=add_steps.output["runner"],
        **step_sensor_args(settings, plan, create_job_flow, add_steps),
    )
    remove_cluster = Ec2TerminateClusterOperator(
        task_id="remove_cluster",
        cluster=plan["cluster"],
        aws_conn_id=settings.aws_conn_id,
    )
    return ClusterTasks(
        (create_job_flow, wait_for_cluster), (add_steps, wait_for_step), remove_cluster
    )
