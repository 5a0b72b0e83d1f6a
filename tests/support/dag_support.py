"""Helpers shared by the DAG tests (the fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import io
import json
import re
import threading
import uuid
from pathlib import Path

from fruits.storage.s3sync import split_uri

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "fruits-test"
REGION = "us-east-1"
# the URIs upload_code returns, for a code version "v1"
CODE = {
    "py_files": f"s3://{BUCKET}/code/v1/fruits_spark.zip",
    "featurize": f"s3://{BUCKET}/code/v1/featurize.py",
    "reduce": f"s3://{BUCKET}/code/v1/reduce.py",
    "bootstrap": f"s3://{BUCKET}/code/v1/bootstrap.sh",
    "requirements": f"s3://{BUCKET}/code/v1/requirements.txt",
    "weights": f"s3://{BUCKET}/code/v1/weights/w.weights.h5",
}


def logical(date: str) -> dt.datetime:
    return dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)


EARLIER_BATCH = "2026-11-24"  # the batch the fault tests publish earlier outputs for
EARLIER_RUN = f"runs/batch={EARLIER_BATCH}/"


def snapshot(aws, prefix: str = EARLIER_RUN) -> dict[str, bytes]:
    """Every object under ``prefix``, byte for byte (``aws``: the conftest's clients)."""
    return {key: aws.read(key) for key in aws.keys(prefix)}


def task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def failed_at(dag_run, task_id: str) -> dict[str, str]:
    """The run's task states, once it is asserted that the run failed, at ``task_id``."""
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert states[task_id] == "failed", states
    return states


# --- moto's EMR never finishes a step: the tests play the cluster ----------------------


def emr_clusters():
    from moto.emr.models import emr_backends

    for account in list(emr_backends.keys()):
        for region in list(emr_backends[account].keys()):
            yield from list(emr_backends[account][region].clusters.values())


def _arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


FAKE_REPORT = {
    "n_rows": 7,
    "n_features": 1280,
    "k": 3,
    "explained_variance_ratio": [0.5, 0.3, 0.16],
    "cumulative_variance": [0.5, 0.8, 0.96],
    "model": "mobilenetv2",
    "weights": "random",
    "labels": {"Banana": 4, "Kiwi": 3},
}
FAKE_REJECTED = 2
# the last progress reports of completed steps (fruits_spark.progress's fields)
FAKE_PROGRESS = {
    "featurize": {"phase": "done", "done": 9, "total": 9, "finished": True,
                  "elapsed_seconds": 4.5, "average_rate": 2.0},
    "reduce": {"phase": "done", "done": 7, "total": None, "finished": True,
               "elapsed_seconds": 2.25},
}  # fmt: skip
STALLED_AT = 41_200
STALLED = {
    "phase": "running",
    "done": STALLED_AT,
    "total": 90_000,
    "rate": 0.0,
    "eta_seconds": None,
    "finished": False,
    "elapsed_seconds": 4000.0,
    "changed_at": 0.0,
    "updated_at": 4e9,
}  # fmt: skip  (count frozen since 1970)
BOOTSTRAP_FAILURE = "On the master instance, bootstrap action 1 returned a non-zero return code"
CLUSTER_ENDED = ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS")
STEP_ERROR = "error: --weights s3://fruits-test/weights/broken.weights.h5 do not fit mobilenetv2"


class BackgroundDriver:
    """A thread that plays what moto leaves undone, one ``step()`` every 0.2 s until
    ``stop`` is set. A failing step is tried again (on a busy host moto's server can
    answer late, or its state change under an iteration); the same step failing
    :data:`PATIENCE` times in a row ends the thread, and the fixture fails the test
    with its error (``errors``). Failures that a retry got past are kept in ``retried``."""

    PATIENCE = 25  # 5 s of failing in a row

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.errors: list[BaseException] = []
        self.retried: list[BaseException] = []

    def step(self) -> None:
        raise NotImplementedError

    def loop(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                self.step()
                failures = 0
            except Exception as exc:
                failures += 1
                self.retried.append(exc)
                if failures >= self.PATIENCE:
                    self.errors.append(exc)  # surfaced by the fixture
                    return
            self.stop.wait(0.2)


class EmrStepDriver(BackgroundDriver):
    """A background thread that moves the steps moto leaves RUNNING/PENDING.

    ``complete``: every step COMPLETED, writing what the real jobs would, as Spark's
    ``mode("overwrite")`` does (the output folder replaced by one part file with a
    fresh name, and ``_SUCCESS``): features and rejected Parquet for featurize, pca
    Parquet and report.json for reduce. ``fail``: the first step FAILED with a
    stderr.gz in the LogUri, the later ones CANCELLED (CANCEL_AND_WAIT).
    ``fail_reduce``: featurize COMPLETED (its outputs written), reduce FAILED.
    ``cluster_fails``: once steps are queued, the cluster ends TERMINATED_WITH_ERRORS
    (a failed bootstrap action) and its steps CANCELLED, as EMR does.
    ``stall``: featurize stays RUNNING, its progress report (``--progress``) frozen at
    :data:`STALLED_AT` images for an hour. A completed step leaves a finished progress
    report, as the jobs do (``FAKE_PROGRESS``).
    ``policy`` may be changed between runs."""

    def __init__(self, s3, policy: str):
        super().__init__()
        self.s3 = s3
        self.policy = policy

    def step(self) -> None:
        for cluster in emr_clusters():
            self.drive(cluster)

    def drive(self, cluster) -> None:
        if self.policy == "cluster_fails":
            if cluster.steps and cluster.state not in CLUSTER_ENDED:
                cluster.state = "TERMINATED_WITH_ERRORS"
                cluster.last_state_change_reason = BOOTSTRAP_FAILURE
                for step in cluster.steps:
                    if step.state not in ("COMPLETED", "FAILED", "CANCELLED"):
                        step.state = "CANCELLED"
            return
        if self.policy == "stall":
            for step in cluster.steps[:1]:
                self.write_progress(list(step.args), "featurize", STALLED)
            return
        failed = False
        for step in cluster.steps:
            if step.state in ("COMPLETED", "FAILED", "CANCELLED"):
                failed = failed or step.state == "FAILED"
                continue
            if failed:
                step.state = "CANCELLED"
            elif self.policy == "fail" or (
                self.policy == "fail_reduce" and "--report" in list(step.args)
            ):
                self.write_stderr(cluster, step)
                step.state = "FAILED"
                failed = True
            else:
                self.write_outputs(list(step.args))
                name = "reduce" if "--report" in list(step.args) else "featurize"
                self.write_progress(list(step.args), name, FAKE_PROGRESS[name])
                step.state = "COMPLETED"

    def write_progress(self, args: list[str], name: str, record: dict) -> None:
        folder = _arg(args, "--progress")
        if folder:
            bucket, prefix = split_uri(folder)
            body = json.dumps({**record, "step": name}).encode()
            self.s3.put_object(Bucket=bucket, Key=f"{prefix}{name}.json", Body=body)

    def write_stderr(self, cluster, step) -> None:
        bucket, prefix = split_uri(cluster.log_uri)
        key = f"{prefix.rstrip('/')}/{cluster.id}/steps/{step.id}/stderr.gz"
        text = "26/11/24 21:40:01 INFO SparkContext: Running Spark\n" + STEP_ERROR + "\n"
        self.s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(text.encode()))

    def write_outputs(self, args: list[str]) -> None:
        featurize = {"--output": "features", "--rejected": "rejected"}
        reduce = {"--output": "pca"}
        names = reduce if "--report" in args else featurize
        for flag, name in names.items():
            if _arg(args, flag) and name in FAKE_TABLES:  # a test may leave one out
                self.write_parquet(_arg(args, flag), FAKE_TABLES[name]())
        report = _arg(args, "--report")
        if report:
            bucket, key = split_uri(report)
            body = json.dumps(FAKE_REPORT).encode()
            self.s3.put_object(Bucket=bucket, Key=f"{key}report.json", Body=body)

    def write_parquet(self, uri: str, table) -> None:
        """As Spark's ``df.write.mode("overwrite").parquet(uri)``: the folder replaced."""
        import pyarrow.parquet as pq

        bucket, prefix = split_uri(uri)
        old = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        if old:
            self.s3.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": o["Key"]} for o in old]}
            )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        part = f"{prefix}part-00000-{uuid.uuid4()}-c000.snappy.parquet"
        self.s3.put_object(Bucket=bucket, Key=part, Body=buf.getvalue())
        self.s3.put_object(Bucket=bucket, Key=f"{prefix}_SUCCESS", Body=b"")


def _fake_rejected():
    import pyarrow as pa

    return pa.table(
        {
            "path": [f"s3://x/{i}.jpg" for i in range(FAKE_REJECTED)],
            "label": ["Kiwi"] * FAKE_REJECTED,
            "error": ["empty file"] * FAKE_REJECTED,
        }
    )


def _fake_vectors(column: str, width: int):
    import pyarrow as pa

    n = FAKE_REPORT["n_rows"]
    return pa.table(
        {
            "path": [f"s3://x/{i}.jpg" for i in range(n)],
            "label": ["Banana"] * n,
            column: [[float(i)] * width for i in range(n)],
        }
    )


FAKE_TABLES = {
    "rejected": _fake_rejected,
    "features": lambda: _fake_vectors("features", 4),
    "pca": lambda: _fake_vectors("pca", FAKE_REPORT["k"]),
}


# --- moto's SSM runs nothing and its EC2 instances boot nothing: the tests play the nodes


class Ec2NodeDriver(BackgroundDriver):
    """A background thread that does what the ec2 backend's nodes would, through S3.

    Each running primary (tag ``fruits:role=primary``) reports where its user data tells
    it to (the ``LOG_PREFIX`` rendered into it: the attempt's log prefix): ``ready``
    writes ``ready.json`` naming its instance id; ``bootstrap_fails`` writes
    ``failed/primary.json`` as the user data's error trap does; ``never_ready`` writes
    nothing; ``stale`` writes what an earlier attempt's nodes could have left -- a
    ``ready.json`` at the cluster's own prefix and one at this attempt's naming another
    primary -- and nothing of its own. Once an SSM command that names the attempt's
    prefix exists (the step runner was started), the runner says it runs
    (``runner.json``) and the steps in ``steps.json`` move as it would move them:
    ``complete`` (each COMPLETED, writing what the jobs would), ``fail`` (the first
    FAILED with a stderr, the later ones CANCELLED), ``fail_reduce`` (featurize
    COMPLETED, reduce FAILED), ``runner_dies`` (the runner exits with no step done, its
    log uploaded), ``runner_killed`` (it says it runs, then nothing more),
    ``runner_never_starts`` (nothing at all); then it says it exited."""

    def __init__(self, clients, policy: str, steps: str = "complete"):
        super().__init__()
        self.clients = clients
        self.policy = policy
        self.steps = steps
        self.emr_like = EmrStepDriver(clients.s3, "complete")  # writes the jobs' outputs
        self.done: set[str] = set()
        self.log_prefixes: dict[str, str] = {}  # primary's instance id -> its LOG_PREFIX

    def step(self) -> None:
        self.drive()

    def primaries(self):
        found = self.clients.ec2.describe_instances(
            Filters=[
                {"Name": "tag:fruits:role", "Values": ["primary"]},
                {"Name": "instance-state-name", "Values": ["running"]},
            ]
        )
        for reservation in found["Reservations"]:
            for inst in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                yield inst, tags["fruits:cluster-id"]

    def log_prefix(self, instance_id: str) -> str:
        """The key prefix the node's user data names (``LOG_PREFIX='s3://bucket/...'``)."""
        if instance_id not in self.log_prefixes:
            got = self.clients.ec2.describe_instance_attribute(
                InstanceId=instance_id, Attribute="userData"
            )
            script = base64.b64decode(got["UserData"]["Value"]).decode()
            uri = re.search(r"^LOG_PREFIX='(s3://[^']+)'$", script, re.M).group(1)
            self.log_prefixes[instance_id] = uri.split("/", 3)[3]
        return self.log_prefixes[instance_id]

    def drive(self) -> None:
        for inst, cluster_id in self.primaries():
            log = self.log_prefix(inst["InstanceId"])
            ready = {
                "cluster_id": cluster_id,
                "instance_id": inst["InstanceId"],
                "master_url": f"spark://{inst['PrivateIpAddress']}:7077",
                "workers": 2,
            }
            if self.policy == "ready":
                self.put(log + "ready.json", ready)
            elif self.policy == "stale":
                self.put(f"logs/ec2/{cluster_id}/ready.json", ready)  # where reruns reported
                self.put(log + "ready.json", {**ready, "instance_id": "i-0earlierattempt"})
            elif self.policy == "bootstrap_fails":
                self.put(log + "failed/primary.json", {
                    "role": "primary", "instance_id": inst["InstanceId"],
                    "error": NODE_ERROR, "log_tail": "Error: Unable to find a match",
                })  # fmt: skip
            if cluster_id not in self.done and self.runner_started(log):
                self.run_steps(log)
                self.done.add(cluster_id)

    def runner_started(self, log: str) -> bool:
        commands = self.clients.ssm.list_commands()["Commands"]
        return any(log in " ".join(c["Parameters"].get("commands", [])) for c in commands) and bool(
            self.keys(log + "steps.json")
        )

    def run_steps(self, log: str) -> None:
        if self.steps == "runner_never_starts":
            return
        self.put(log + "runner.json", {"state": "running", "pid": 4242})
        if self.steps == "runner_killed":  # SIGKILL: no last word, no more beats
            return
        if self.steps == "runner_dies":
            self.clients.s3.put_object(Bucket=BUCKET, Key=log + "runner.log",
                                       Body=RUNNER_ERROR.encode())  # fmt: skip
            self.put(log + "runner.json", {"state": "exited", "returncode": 1, "error": ""})
            return
        spec = json.loads(self.clients.read(log + "steps.json"))
        failed = None
        for step in spec:
            folder = f"{log}steps/{step['id']}/"
            reduce = "--report" in step["argv"]
            if failed:
                state = {"state": "CANCELLED", "reason": f"step {failed} failed"}
            elif self.steps == "fail" or (self.steps == "fail_reduce" and reduce):
                self.clients.s3.put_object(
                    Bucket=BUCKET, Key=folder + "stderr",
                    Body=("26/11/24 21:40:01 INFO SparkContext: Running Spark\n"
                          + STEP_ERROR + "\n").encode(),
                )  # fmt: skip
                state = {"state": "FAILED", "returncode": 1}
                failed = step["id"]
            else:
                self.emr_like.write_outputs(step["argv"])
                state = {"state": "COMPLETED", "returncode": 0}
            self.put(folder + "state.json", state)
        self.put(log + "runner.json", {"state": "exited", "returncode": int(bool(failed))})

    def keys(self, prefix: str) -> list[str]:
        found = self.clients.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for o in found.get("Contents", [])]

    def put(self, key: str, body: dict) -> None:
        self.clients.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(body).encode())


RUNNER_ERROR = "Traceback (most recent call last):\nModuleNotFoundError: No module named 'boto3'"
NODE_ERROR = "dnf install java-17-amazon-corretto-headless failed (exit status 1)"
