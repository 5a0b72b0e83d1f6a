"""The ``ec2`` backend: Spark standalone on EC2 instances the pipeline manages itself.

- ``create_job_flow`` (:class:`Ec2CreateClusterOperator`, the provider's
  ``EC2CreateInstanceOperator``): one on-demand primary, then N workers (spot if asked)
  whose user data names the primary's private IP. Each node installs Java, Python and
  the pinned job requirements, starts Spark (``fruits/ec2/user_data.sh``, ``node.py``),
  and the primary writes ``<log prefix>ready.json`` once every worker joined (or
  ``failed/<node>.json`` saying why not). The task waits for that, then returns the
  instance ids, primary first; if anything fails it terminates what it launched.
- ``add_steps`` (:class:`Ec2AddStepsOperator`, the provider's ``SsmRunCommandOperator``):
  the run's EMR-format steps as ``spark-submit --master spark://<primary>:7077`` lines
  reading and writing ``s3a://``, written to ``<log prefix>steps.json``; one SSM command
  on the primary starts ``node.py run-steps``, which runs them in order.
- ``wait_for_step`` (:class:`Ec2StepSensor`, reschedule mode): reads the state files the
  runner writes under ``<log prefix>steps/<id>/`` (as EMR does under its LogUri); a
  failed step fails the run with its stderr; nodes that are gone fail it at once.
- ``remove_cluster`` (:class:`Ec2TerminateClusterOperator`, the provider's
  ``EC2TerminateInstanceOperator``): terminates the instances, and any other instance
  tagged with the cluster's id.

No SSH and no key pair: IMDSv2 only, encrypted volumes, the instance profile for S3,
SSM for commands. ``InstanceInitiatedShutdownBehavior=terminate`` plus a shutdown timer
in the user data end the instances if Airflow never does.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.operators.ec2 import (
    EC2CreateInstanceOperator,
    EC2TerminateInstanceOperator,
)
from airflow.providers.amazon.aws.operators.ssm import SsmRunCommandOperator
from airflow.sdk.exceptions import AirflowFailException

from fruits.backends import ClusterTasks
from fruits.backends.sensor import StepsSensor
from fruits.config import Settings

REMOTE = True  # the nodes read code and weights from code/<version>/
PROJECT_TAG = {"Key": "project", "Value": "fruits-pipeline"}
CLUSTER_TAG = "fruits:cluster-id"
BUCKET_TAG = "fruits:bucket"  # whose clusters a run may reap: this pipeline's bucket's
ROLE_TAG = "fruits:role"
GONE = ("shutting-down", "terminated", "stopping", "stopped")
LIVE = ("pending", "running", "stopping", "stopped")  # billing, or could be again
FAILED_STATES = ("FAILED", "INTERRUPTED", "CANCELLED")  # in the order a report names them


def code_files() -> dict[str, bytes]:
    """The node program, its step runner and the nodes' requirements, in code/<version>/."""
    from fruits import step_runner
    from fruits.ec2 import NODE_SCRIPT
    from fruits.jobcode import node_requirements

    return {
        "node.py": NODE_SCRIPT.read_bytes(),
        "step_runner.py": Path(step_runner.__file__).read_bytes(),
        "node-requirements.txt": node_requirements().encode(),
    }


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = re.sub(r"^s3[an]?://", "", uri).partition("/")
    return bucket, key


# --- the request ------------------------------------------------------------------------


def instance_config(
    settings: Settings, *, role: str, instance_type: str, spot: bool, tags: Mapping[str, str]
) -> dict[str, Any]:
    """One role's ``run_instances`` request (without ImageId, counts and user data)."""
    ec2 = settings.ec2
    tag_list = [{"Key": k, "Value": v} for k, v in {**tags, ROLE_TAG: role}.items()]
    config: dict[str, Any] = {
        "InstanceType": instance_type,
        "IamInstanceProfile": {"Name": ec2.instance_profile},
        "MetadataOptions": {
            "HttpTokens": "required",  # IMDSv2 only
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": 1,
        },
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/xvda",  # Amazon Linux 2023's root device
                "Ebs": {
                    "VolumeSize": ec2.volume_gb,
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            }
        ],
        "InstanceInitiatedShutdownBehavior": "terminate",  # the user data's timer ends it
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": tag_list}
            for kind in ("instance", "volume", "network-interface")
        ],
    }
    if ec2.subnet:
        config["SubnetId"] = ec2.subnet
    if ec2.security_group:
        config["SecurityGroupIds"] = [ec2.security_group]
    if spot:
        config["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            },
        }
    return config


def cluster_request(
    settings: Settings, *, name: str, code: Mapping[str, str], run_key: str, timeout: int
) -> dict[str, Any]:
    """What ``create_job_flow`` launches: both roles' requests and the user data values
    (rendered at launch: the workers' needs the primary's address)."""
    from fruits.ec2 import hadoop_version

    ec2 = settings.ec2
    cluster_id = f"ec2-{run_key}"
    log_prefix = f"{ec2.log_uri.rstrip('/')}/{cluster_id}/"
    tags = {**ec2.tags, PROJECT_TAG["Key"]: PROJECT_TAG["Value"], CLUSTER_TAG: cluster_id,
            BUCKET_TAG: settings.bucket, "Name": name[:255]}  # fmt: skip
    # the dead-man switch: longer than start-up and the steps' own timeout together
    lifetime = math.ceil((ec2.ready_timeout + timeout) / 60) + 30
    return {
        "Name": name,
        "cluster_id": cluster_id,
        "log_prefix": log_prefix,
        "image_id": ec2.ami,
        "worker_count": ec2.worker_count,
        "ready_timeout": ec2.ready_timeout,
        "primary": instance_config(
            settings, role="primary", instance_type=ec2.primary_type, spot=False, tags=tags
        ),
        "workers": instance_config(
            settings,
            role="worker",
            instance_type=ec2.worker_type,
            spot=ec2.worker_spot,
            tags=tags,
        ),  # fmt: skip
        "user_data": {
            "cluster_id": cluster_id,
            "log_prefix": log_prefix,
            "code_prefix": code["prefix"],
            "workers": ec2.worker_count,
            "ready_timeout": ec2.ready_timeout,
            "lifetime_minutes": lifetime,
            "hadoop_aws": hadoop_version(),
            "python": ec2.python,
        },
    }


def clear_leftovers(settings: Settings) -> dict[str, list[str]]:
    """Terminate the instances of clusters that runs killed before their teardown left
    (cluster id -> instance ids). Called by a run that holds the cluster slot and has not
    launched yet, so every live instance of this pipeline's bucket is a leftover; the
    nodes' shutdown timer would end them too, but later."""
    from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

    hook = EC2Hook(aws_conn_id=settings.aws_conn_id, api_type="client_type")
    found = hook.conn.describe_instances(
        Filters=[
            {"Name": f"tag:{PROJECT_TAG['Key']}", "Values": [PROJECT_TAG["Value"]]},
            {"Name": f"tag:{BUCKET_TAG}", "Values": [settings.bucket]},
            {"Name": "instance-state-name", "Values": list(LIVE)},
        ]
    )
    leftovers: dict[str, list[str]] = {}
    for inst in (i for r in found["Reservations"] for i in r["Instances"]):
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        leftovers.setdefault(tags.get(CLUSTER_TAG, "?"), []).append(inst["InstanceId"])
    ids = sorted(i for group in leftovers.values() for i in group)
    if ids:
        hook.conn.terminate_instances(InstanceIds=ids)
    return {cluster: sorted(group) for cluster, group in leftovers.items()}


# --- the operators ----------------------------------------------------------------------


def read_json(s3: Any, uri: str) -> dict[str, Any] | None:
    """The JSON object at ``uri``, or None if there is none (S3Hook ``s3``)."""
    bucket, key = split_s3(uri)
    if not s3.check_for_key(key, bucket_name=bucket):
        return None
    return json.loads(s3.read_key(key, bucket_name=bucket))


class Ec2CreateClusterOperator(EC2CreateInstanceOperator):
    """Launch the primary, then the workers, wait until the primary says the cluster is
    ready; return the instance ids, primary first. Terminates what it launched if
    anything fails (the teardown never sees ids from a failed task)."""

    template_fields: Sequence[str] = (*EC2CreateInstanceOperator.template_fields, "cluster")

    def __init__(self, *, cluster: Any, ready_poll: float = 15, **kwargs: Any):
        super().__init__(image_id="", wait_for_completion=True, **kwargs)
        self.cluster = cluster
        self.ready_poll = ready_poll

    def execute(self, context: Any) -> list[str]:
        from fruits.ec2 import render_user_data

        cluster = self.cluster
        self.image_id = cluster["image_id"]
        values = {**cluster["user_data"], "region": self.hook.conn_region_name}
        launched: list[str] = []
        try:
            self.log.info("cluster %s: launching the primary", cluster["cluster_id"])
            launched += self.launch(
                context, cluster["primary"], 1,
                render_user_data({**values, "role": "primary", "master_host": ""}),
            )  # fmt: skip
            primary = self.describe(launched[:1])[0]
            address = primary["PrivateIpAddress"]
            self.log.info("cluster %s: %d workers joining %s", cluster["cluster_id"],
                          cluster["worker_count"], address)  # fmt: skip
            launched += self.launch(
                context, cluster["workers"], int(cluster["worker_count"]),
                render_user_data({**values, "role": "worker", "master_host": address}),
            )  # fmt: skip
            self._on_kill_instance_ids = list(launched)
            ready = self.wait_until_ready(cluster, launched)
        except BaseException as exc:
            if launched:
                self.log.error("cluster %s failed (%s): terminating %s",
                               cluster["cluster_id"], exc, launched)  # fmt: skip
                self.hook.conn.terminate_instances(InstanceIds=launched)
            raise
        self.log.info("cluster %s ready: %s", cluster["cluster_id"], ready)
        return launched

    def launch(self, context: Any, config: Mapping, count: int, user_data: str) -> list[str]:
        self.config = {**config, "UserData": user_data}
        self.min_count = self.max_count = count
        return list(super().execute(context))

    def describe(self, instance_ids: list[str]) -> list[dict[str, Any]]:
        reservations = self.hook.conn.describe_instances(InstanceIds=instance_ids)
        return [i for r in reservations["Reservations"] for i in r["Instances"]]

    def wait_until_ready(self, cluster: Mapping[str, Any], instance_ids: list[str]) -> dict:
        """``ready.json`` once the primary wrote it; fails at once on a node's
        ``failed/`` report or a node that is gone, and after ``ready_timeout``."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        s3 = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        log_prefix = cluster["log_prefix"]
        deadline = time.monotonic() + float(cluster["ready_timeout"])
        while True:
            ready = read_json(s3, log_prefix + "ready.json")
            if ready is not None:
                return ready
            why = node_failure(s3, log_prefix) or nodes_gone(self.describe(instance_ids))
            if why:
                raise AirflowFailException(f"cluster {cluster['cluster_id']} did not start: {why}")
            if time.monotonic() > deadline:
                raise AirflowFailException(
                    f"cluster {cluster['cluster_id']} not ready within "
                    f"{cluster['ready_timeout']}s: no {log_prefix}ready.json. The nodes' "
                    f"console output says why: aws ec2 get-console-output --instance-id "
                    f"{instance_ids[0]}"
                )
            time.sleep(self.ready_poll)


def node_failure(s3: Any, log_prefix: str) -> str | None:
    """What a node's user data reported under ``failed/`` before giving up, if anything."""
    bucket, prefix = split_s3(log_prefix + "failed/")
    keys = s3.list_keys(bucket_name=bucket, prefix=prefix) or []
    for key in sorted(keys):
        report = json.loads(s3.read_key(key, bucket_name=bucket))
        node = report.get("instance_id") or report.get("role", "?")
        return (
            f"the {report.get('role', '?')} node ({node}) failed: {report.get('error')}\n"
            f"--- s3://{bucket}/{key} log tail ---\n{report.get('log_tail', '')}"
        )
    return None


def nodes_gone(instances: list[Mapping[str, Any]]) -> str | None:
    """``instance i-... is terminated: <reason>`` for the first node that is ending."""
    for inst in instances:
        state = inst.get("State", {}).get("Name")
        if state in GONE:
            reason = inst.get("StateReason", {}).get("Message") or inst.get(
                "StateTransitionReason", ""
            )
            return f"instance {inst['InstanceId']} is {state}" + (f": {reason}" if reason else "")
    return None


class Ec2AddStepsOperator(SsmRunCommandOperator):
    """Write the steps (``spark-submit`` lines for the primary's master) to
    ``<log prefix>steps.json``, their PENDING states beside, and start the primary's
    step runner with one SSM command; returns the step ids."""

    template_fields: Sequence[str] = (
        *SsmRunCommandOperator.template_fields, "cluster", "instance_ids", "steps",
    )  # fmt: skip

    def __init__(self, *, cluster: Any, instance_ids: Any, steps: Any, **kwargs: Any):
        kwargs.setdefault("waiter_delay", 5)
        kwargs.setdefault("waiter_max_attempts", 60)
        super().__init__(document_name="AWS-RunShellScript", wait_for_completion=True, **kwargs)
        self.cluster = cluster
        self.instance_ids = instance_ids
        self.steps = steps

    def execute(self, context: Any) -> list[str]:
        import secrets

        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fruits.ec2 import NODE_HOME, run_steps_command
        from fruits.steps import for_standalone

        s3 = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        log_prefix = self.cluster["log_prefix"]
        ready = read_json(s3, log_prefix + "ready.json")
        if ready is None:
            raise AirflowFailException(f"cluster {self.cluster['cluster_id']} is not ready")
        code_prefix = self.cluster["user_data"]["code_prefix"]
        commands = for_standalone(
            list(self.steps),
            master_url=ready["master_url"],
            spark_submit=f"{NODE_HOME}/venv/bin/spark-submit",
            code_prefix=code_prefix,
            code_dir=f"{NODE_HOME}/code",
        )
        ids = [f"s-EC2{n:02d}{secrets.token_hex(4).upper()}" for n in range(len(commands))]
        spec = [
            {"id": sid, "name": step["Name"], "argv": argv}
            for sid, step, argv in zip(ids, self.steps, commands, strict=True)
        ]
        bucket, prefix = split_s3(log_prefix)
        for sid in ids:
            s3.load_string(json.dumps({"state": "PENDING"}), f"{prefix}steps/{sid}/state.json",
                           bucket_name=bucket, replace=True)  # fmt: skip
        s3.load_string(json.dumps(spec, indent=1), f"{prefix}steps.json", bucket_name=bucket,
                       replace=True)  # fmt: skip
        for item in spec:
            self.log.info("step %s (%s): %s", item["id"], item["name"], " ".join(item["argv"]))
        primary = list(self.instance_ids)[0]
        self.run_command_kwargs = {
            "InstanceIds": [primary],
            "Comment": f"fruits-pipeline {self.cluster['cluster_id']}: run the steps"[:100],
            "Parameters": {"commands": [run_steps_command(log_prefix)]},
            "TimeoutSeconds": 600,
        }
        command_id = super().execute(context)
        self.log.info("SSM command %s started the step runner on %s", command_id, primary)
        return ids


class Ec2StepSensor(StepsSensor):
    """Reads ``<log prefix>steps/<id>/state.json``; a failed, cancelled or interrupted
    step fails the run with its stderr; nodes that are gone fail it at once."""

    template_fields: Sequence[str] = (*StepsSensor.template_fields, "cluster", "instance_ids")

    def __init__(self, *, cluster: Any, instance_ids: Any, aws_conn_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.cluster = cluster
        self.instance_ids = instance_ids
        self.aws_conn_id = aws_conn_id

    def s3(self) -> Any:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id)

    def states(self, s3: Any) -> dict[str, dict]:
        log_prefix = self.cluster["log_prefix"]
        return {
            sid: read_json(s3, f"{log_prefix}steps/{sid}/state.json") or {"state": "PENDING"}
            for sid in self.step_ids
        }

    def poke(self, context: Any) -> bool:
        s3 = self.s3()
        states = self.states(s3)
        self.log.info("steps: %s", {sid: s["state"] for sid, s in states.items()})
        for bad in FAILED_STATES:  # the cause before its consequences
            sid = next((s for s in self.step_ids if states[s]["state"] == bad), None)
            if sid is not None:
                message = self.report(s3, sid, states[sid])
                self.log.error("%s", message)
                raise AirflowFailException(message)
        if states[self.step_ids[-1]]["state"] == "COMPLETED":
            return True
        from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

        hook = EC2Hook(aws_conn_id=self.aws_conn_id, api_type="client_type")
        found = hook.conn.describe_instances(InstanceIds=list(self.instance_ids))
        gone = nodes_gone([i for r in found["Reservations"] for i in r["Instances"]])
        if gone:
            raise AirflowFailException(
                f"cluster {self.cluster['cluster_id']}: {gone}; steps {self.step_ids} cannot finish"
            )
        return False

    def report(self, s3: Any, step_id: str, state: Mapping[str, Any]) -> str:
        """``step <id> FAILED (exit status N): <reason>`` and the tail of its stderr."""
        from fruits.emr import tail_lines

        head = f"step {step_id} {state.get('state')}"
        if state.get("returncode") is not None:
            head += f" (exit status {state['returncode']})"
        if state.get("reason"):
            head += f": {state['reason']}"
        uri = f"{self.cluster['log_prefix']}steps/{step_id}/stderr"
        bucket, key = split_s3(uri)
        if s3.check_for_key(key, bucket_name=bucket):
            stderr = tail_lines(s3.read_key(key, bucket_name=bucket))
            return f"{head}\n--- {uri} (tail) ---\n{stderr}"
        return f"{head}\n(no stderr at {uri})"

    def late_report(self) -> str:
        s3 = self.s3()
        states = self.states(s3)
        running = [s for s in self.step_ids if states[s]["state"] == "RUNNING"]
        sid = running[0] if running else self.step_ids[-1]
        return f"the steps did not finish within {self.timeout:.0f}s\n" + self.report(
            s3, sid, states[sid]
        )


class Ec2TerminateClusterOperator(EC2TerminateInstanceOperator):
    """Terminate the cluster's instances: those given, and any other instance carrying
    their cluster id tag that is not ended yet (belt and braces: nothing left billing)."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("poll_interval", 5)
        kwargs.setdefault("max_attempts", 120)
        super().__init__(wait_for_completion=True, **kwargs)

    def execute(self, context: Any) -> list[str]:
        given = self.instance_ids or []
        given = [given] if isinstance(given, str) else list(given)
        clusters = {
            tag["Value"]
            for r in self.hook.conn.describe_instances(InstanceIds=given)["Reservations"]
            for i in r["Instances"]
            for tag in i.get("Tags", [])
            if tag["Key"] == CLUSTER_TAG
        } if given else set()  # fmt: skip
        found = self.hook.conn.describe_instances(
            Filters=[
                {"Name": f"tag:{CLUSTER_TAG}", "Values": sorted(clusters)},
                {"Name": "instance-state-name", "Values": list(LIVE)},
            ]
        ) if clusters else {"Reservations": []}  # fmt: skip
        tagged = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
        self.instance_ids = sorted({*given, *tagged})
        if not self.instance_ids:
            self.log.info("no instance left to terminate")
            return []
        super().execute(context)
        self.log.info("cluster %s terminated: %s", ", ".join(sorted(clusters)), self.instance_ids)
        return self.instance_ids


def cluster_tasks(settings: Settings, plan: Any) -> ClusterTasks:
    create_job_flow = Ec2CreateClusterOperator(
        task_id="create_job_flow",
        cluster=plan["job_flow"],
        ready_poll=min(15, settings.poke_interval),
        aws_conn_id=settings.aws_conn_id,
        retries=0,  # a retry could leave a second cluster behind
    )
    add_steps = Ec2AddStepsOperator(
        task_id="add_steps",
        cluster=plan["job_flow"],
        instance_ids=create_job_flow.output,
        steps=plan["steps"],
        aws_conn_id=settings.aws_conn_id,
        retries=0,  # a retry would run the steps twice
    )
    wait_for_step = Ec2StepSensor(
        task_id="wait_for_step",
        job_flow_id=create_job_flow.output,
        cluster=plan["job_flow"],
        instance_ids=create_job_flow.output,
        step_ids=add_steps.output,
        timeout_seconds=plan["timeout"],
        poke_interval=settings.poke_interval,
        mode="reschedule",
        aws_conn_id=settings.aws_conn_id,
    )
    remove_cluster = Ec2TerminateClusterOperator(
        task_id="remove_cluster",
        instance_ids=create_job_flow.output,
        aws_conn_id=settings.aws_conn_id,
    )
    return ClusterTasks(create_job_flow, add_steps, wait_for_step, remove_cluster)
