"""``add_steps`` and ``wait_for_step`` of the ``ec2`` backend: the steps go to
``<log prefix>steps.json`` and one SSM command starts the primary's step runner
(``node.py run-steps``); the runner mirrors each step's state and output to
``<log prefix>steps/<id>/``, as EMR copies step logs under its LogUri."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.amazon.aws.operators.ssm import SsmRunCommandOperator
from airflow.sdk.exceptions import AirflowFailException

from fruits.clusters.common.step_reports import failed_step, headline, new_step_ids
from fruits.clusters.common.step_runner import PENDING, STDERR_TAIL, all_done, log_tail
from fruits.clusters.common.step_sensor import StepFilesSensor, watch_progress
from fruits.clusters.ec2.instances import instances, nodes_gone
from fruits.storage.s3sync import read_json, split_uri

# The SSM command only starts the detached step runner: it ends in seconds.
SSM_TIMEOUT = 600  # seconds SSM lets the command run
SSM_POLL, SSM_POLLS = 5, 60  # how often, and how many times, the operator looks at it
# seconds the sensor gives the runner to write <log prefix>runner.json after the SSM
# command started it: a runner that never says it runs is dead (it fails in seconds)
RUNNER_START_GRACE = 300
RUNNER_LOG_TAIL = 60  # lines of the runner's own log shown when it died
# seconds without a rewrite of runner.json (the runner beats every minute) after which a
# running runner counts as dead: killed outright (SIGKILL, the OOM killer), no finally ran
RUNNER_SILENT = 600


class Ec2AddStepsOperator(SsmRunCommandOperator):
    """Write the steps (``spark-submit`` lines for the primary's master) to
    ``<log prefix>steps.json``, their PENDING states beside, and start the primary's
    step runner with one SSM command; returns the step ids."""

    template_fields: Sequence[str] = (
        *SsmRunCommandOperator.template_fields, "cluster", "instance_ids", "steps", "log_prefix",
    )  # fmt: skip

    def __init__(
        self, *, cluster: Any, instance_ids: Any, steps: Any, log_prefix: Any, **kwargs: Any
    ):
        kwargs.setdefault("waiter_delay", SSM_POLL)
        kwargs.setdefault("waiter_max_attempts", SSM_POLLS)
        # never deferred, whatever [operators] default_deferrable says: this task returns
        # the step ids; a deferred SsmRunCommandOperator would return the command id
        kwargs["deferrable"] = False
        super().__init__(document_name="AWS-RunShellScript", wait_for_completion=True, **kwargs)
        self.cluster = cluster
        self.instance_ids = instance_ids
        self.steps = steps
        self.log_prefix = log_prefix  # the attempt's (create_job_flow's XCom log_prefix)

    def execute(self, context: Any) -> list[str]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fruits.clusters.common.spark_steps import for_standalone
        from fruits.clusters.ec2.user_data import NODE_HOME, run_steps_command

        s3 = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        log_prefix = self.log_prefix
        ready = read_json(s3, log_prefix + "ready.json")
        if ready is None or ready.get("instance_id") != list(self.instance_ids)[0]:
            raise AirflowFailException(f"cluster {self.cluster['cluster_id']} is not ready")
        code_prefix = self.cluster["user_data"]["code_prefix"]
        commands = for_standalone(
            list(self.steps),
            master_url=ready["master_url"],
            spark_submit=f"{NODE_HOME}/venv/bin/spark-submit",
            code_prefix=code_prefix,
            code_dir=f"{NODE_HOME}/code",
        )
        ids = new_step_ids("ec2", len(commands))
        spec = [
            {"id": sid, "name": step["Name"], "argv": argv}
            for sid, step, argv in zip(ids, self.steps, commands, strict=True)
        ]
        bucket, prefix = split_uri(log_prefix)
        for sid in ids:
            s3.load_string(json.dumps({"state": PENDING}), f"{prefix}steps/{sid}/state.json",
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
            "TimeoutSeconds": SSM_TIMEOUT,
        }
        started = time.time()
        command_id = super().execute(context)
        self.log.info("SSM command %s started the step runner on %s", command_id, primary)
        context["ti"].xcom_push(
            key="runner", value={"command_id": command_id, "instance_id": primary,
                                 "started_at": started}
        )  # fmt: skip
        return ids


class Ec2StepsSensor(StepFilesSensor):
    """Reads ``<log prefix>steps/<id>/state.json``; a failed, cancelled or interrupted
    step fails the run with its stderr; nodes that are gone fail it at once."""

    template_fields: Sequence[str] = (
        *StepFilesSensor.template_fields, "cluster", "instance_ids", "log_prefix", "runner",
    )  # fmt: skip

    def __init__(
        self,
        *,
        cluster: Any,
        instance_ids: Any,
        log_prefix: Any,
        runner: Any,
        aws_conn_id: str,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.cluster = cluster
        self.instance_ids = instance_ids
        self.log_prefix = log_prefix  # the attempt's
        self.runner = runner  # add_steps' XCom runner: the SSM command and when it ran
        self.aws_conn_id = aws_conn_id

    def s3(self) -> Any:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id)

    def poke(self, context: Any) -> bool:
        done = self.steps_done(self.step_states())
        if done:
            return True
        dead = self.runner_dead()
        if dead:
            # the runner may have written the last states just before it exited
            if self.steps_done(self.step_states()):
                return True
            self.log.error("%s", dead)
            raise AirflowFailException(dead)
        watch_progress(self)
        from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

        hook = EC2Hook(aws_conn_id=self.aws_conn_id, api_type="client_type")
        found = hook.conn.describe_instances(InstanceIds=list(self.instance_ids))
        gone = nodes_gone(instances(found))
        if gone:
            raise AirflowFailException(
                f"cluster {self.cluster['cluster_id']}: {gone}; steps {self.step_ids} cannot finish"
            )
        return False

    def steps_done(self, states: dict[str, dict]) -> bool:
        """True once every step completed; a failed step fails the task with its stderr."""
        self.log.info("steps: %s", {sid: s["state"] for sid, s in states.items()})
        sid = failed_step(self.step_ids, states)
        if sid is not None:
            message = self.step_report(sid, states[sid])
            self.log.error("%s", message)
            raise AirflowFailException(message)
        return all_done(self.step_ids, states)

    def runner_dead(self) -> str | None:
        """Why the step runner cannot finish the steps, if it cannot: it exited (its own
        ``runner.json`` says so) or never said it started within
        :data:`RUNNER_START_GRACE` of the SSM command (whose status and output come with
        the message)."""
        s3, cluster_id = self.s3(), self.cluster["cluster_id"]
        runner = read_json(s3, self.log_prefix + "runner.json")
        if runner is not None and runner.get("state") == "exited":
            error = f", {runner['error']}" if runner.get("error") else ""
            return (
                f"cluster {cluster_id}: the step runner exited (status "
                f"{runner.get('returncode')}{error}) before steps {self.step_ids} finished\n"
                f"{self.runner_log(s3)}"
            )
        if runner is not None and runner.get("state") == "running":
            silent = self.runner_silence(s3)
            if silent > RUNNER_SILENT:
                return (
                    f"cluster {cluster_id}: the step runner has said nothing for {silent:.0f}s "
                    f"(its {self.log_prefix}runner.json is rewritten every minute while it "
                    f"runs): killed, or its node is gone\n{self.runner_log(s3)}"
                )
        waited = time.time() - float(self.runner["started_at"])
        if runner is None and waited > RUNNER_START_GRACE:
            return (
                f"cluster {cluster_id}: the step runner never started: no "
                f"{self.log_prefix}runner.json {waited:.0f}s after the SSM command "
                f"{self.runner['command_id']}; {self.ssm_outcome()}\n{self.runner_log(s3)}"
            )
        return None

    def runner_silence(self, s3: Any) -> float:
        """Seconds since ``runner.json`` was last written (S3's clock, not the node's)."""
        import datetime as dt

        bucket, key = split_uri(self.log_prefix + "runner.json")
        written = s3.get_key(key, bucket_name=bucket).last_modified
        return (dt.datetime.now(dt.UTC) - written).total_seconds()

    def runner_log(self, s3: Any) -> str:
        uri = f"{self.log_prefix}runner.log"
        bucket, key = split_uri(uri)
        if not s3.check_for_key(key, bucket_name=bucket):
            return f"(no runner log at {uri})"
        text = s3.read_key(key, bucket_name=bucket)
        return f"--- {uri} (tail) ---\n{log_tail(text, RUNNER_LOG_TAIL)}"

    def ssm_outcome(self) -> str:
        """The SSM command's status and output on the primary, through ``SsmHook``."""
        from airflow.providers.amazon.aws.hooks.ssm import SsmHook

        hook = SsmHook(aws_conn_id=self.aws_conn_id)
        try:
            got = hook.conn.get_command_invocation(
                CommandId=self.runner["command_id"], InstanceId=self.runner["instance_id"]
            )
        except Exception as exc:  # the command may have expired: say so, keep the reason
            return f"its status could not be read ({exc})"
        out = (got.get("StandardErrorContent") or got.get("StandardOutputContent") or "").strip()
        return f"SSM says {got.get('Status')}" + (f": {out}" if out else "")

    def step_states(self) -> dict[str, dict]:
        s3, log_prefix = self.s3(), self.log_prefix
        return {
            sid: read_json(s3, f"{log_prefix}steps/{sid}/state.json") or {"state": PENDING}
            for sid in self.step_ids
        }

    def step_report(self, step_id: str, state: Mapping[str, Any]) -> str:
        """The step's headline and the tail of its stderr, as the runner mirrored it."""
        uri = f"{self.log_prefix}steps/{step_id}/stderr"
        bucket, key = split_uri(uri)
        s3 = self.s3()
        if s3.check_for_key(key, bucket_name=bucket):
            stderr = log_tail(s3.read_key(key, bucket_name=bucket), STDERR_TAIL)
            return f"{headline(step_id, state)}\n--- {uri} (tail) ---\n{stderr}"
        return f"{headline(step_id, state)}\n(no stderr at {uri})"
