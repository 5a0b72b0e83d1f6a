"""Helpers shared by the DAG tests (the fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import io
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# the report.json of the batch's earlier run (``earlier_outputs``): k=99 no run gives here
EARLIER_REPORT = {
    "n_rows": 7, "n_features": 1280, "k": 99, "explained_variance_ratio": [0.5, 0.3, 0.16],
    "cumulative_variance": [0.5, 0.8, 0.96], "model": "mobilenetv2", "weights": "random",
    "labels": {"Banana": 4, "Kiwi": 3},
}  # fmt: skip


@dataclass(frozen=True)
class Batch:
    """A batch written for a run: its folder, the images featurize must turn into
    features, and the files it must reject (relative path -> what is wrong)."""

    folder: Path
    good: list[Path]
    bad: dict[str, str]

    def uris(self, date: str, names: list[str]) -> list[str]:
        return sorted(f"s3://{BUCKET}/raw/batch={date}/{name}" for name in names)


def write_test_batch(
    folder: Path, labels: list[str], per_label: int, bad_label: str | None
) -> Batch:
    """:func:`fruits.dev.sample_batch.write_batch`, and its bad files in ``bad_label``."""
    from fruits.dev.sample_batch import write_bad_files, write_batch

    good = write_batch(folder, per_label=per_label, labels=labels)
    bad = write_bad_files(folder, label=bad_label) if bad_label else {}
    return Batch(folder, good, bad)


def read_parquet(aws, prefix: str) -> list[dict]:
    """The rows of every Parquet part under ``prefix`` (``aws``: the conftest's clients)."""
    import pyarrow.parquet as pq

    keys = [k for k in aws.keys(prefix) if k.endswith(".parquet")]
    assert keys, f"no Parquet under {prefix}"
    return [row for k in keys for row in pq.read_table(io.BytesIO(aws.read(k))).to_pylist()]


def assert_real_outputs(aws, prefix: str, batch: Batch, date: str, width: int = 1280) -> dict:
    """The outputs under ``prefix`` are what the real jobs make of ``batch``: a feature
    row per good image (its label, its s3:// URI as a cluster names it, ``width`` values,
    not all alike), a rejected row per bad file, a PCA row per feature row, and a report
    that counts them. Returns report.json."""
    import numpy as np

    good = [p.relative_to(batch.folder).as_posix() for p in batch.good]
    features = read_parquet(aws, prefix + "features/")
    assert sorted(r["path"] for r in features) == batch.uris(date, good)
    assert all(r["label"] == r["path"].split("/")[-2] for r in features)
    vectors = np.array([r["features"] for r in features], dtype=np.float64)
    assert vectors.shape == (len(good), width) and np.isfinite(vectors).all()
    assert len({tuple(v) for v in vectors}) == len(good), "two images gave the same features"
    rejected = read_parquet(aws, prefix + "rejected/") if batch.bad else []
    assert sorted(r["path"] for r in rejected) == batch.uris(date, list(batch.bad))
    assert all(r["error"] for r in rejected)
    report = json.loads(aws.read(prefix + "report/report.json"))
    pca = read_parquet(aws, prefix + "pca/")
    assert sorted(r["path"] for r in pca) == batch.uris(date, good)
    assert {len(r["pca"]) for r in pca} == {report["k"]}
    assert (report["n_rows"], report["n_features"]) == (len(good), width)
    assert report["n_rejected"] == len(batch.bad)
    assert report["model"] == "mobilenetv2" and report["weights"] == "random"
    assert len(report["cumulative_variance"]) == report["k"] >= 1
    assert "fruits-real-steps-" not in json.dumps(report)  # no scratch path leaked
    return report


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
STEP_ENDED = ("COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED")
STEP_ERROR = "error: --weights s3://fruits-test/weights/broken.weights.h5 do not fit mobilenetv2"
# the stderr of a step a policy fails (a real cluster's failure, not this host's)
CANNED_STDERR = "26/11/24 21:40:01 INFO SparkContext: Running Spark\n" + STEP_ERROR + "\n"


def is_reduce(args: list[str]) -> bool:
    return "--report" in args


class BackgroundDriver:
    """A thread that plays what moto leaves undone, one ``step()`` every 0.2 s until
    ``stop`` is set, then ``close()``. A failing step is tried again (on a busy host
    moto's server can answer late, or its state change under an iteration); the same
    step failing :data:`PATIENCE` times in a row ends the thread, and the fixture fails
    the test with its error (``errors``). Failures that a retry got past are kept in
    ``retried``."""

    PATIENCE = 25  # 5 s of failing in a row

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.errors: list[BaseException] = []
        self.retried: list[BaseException] = []

    def step(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """End what the driver started (a running spark-submit, its scratch folder)."""

    def loop(self) -> None:
        failures = 0
        try:
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
        finally:
            self.close()


class RealStepsDriver(BackgroundDriver):
    """A driver that runs submitted steps for real (:class:`real_steps.RealSteps`), one
    cluster's at a time: ``runs`` per cluster, ``running`` the step under way."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, Any] = {}  # cluster id -> its RealSteps
        self.running: tuple[str, Any] | None = None  # (cluster id, step) being run

    def close(self) -> None:
        for run in self.runs.values():
            run.close()
        self.runs.clear()

    def forget(self, cluster_id: str) -> None:
        run = self.runs.pop(cluster_id, None)
        if run is not None:
            run.close()
        if self.running is not None and self.running[0] == cluster_id:
            self.running = None


class EmrStepDriver(RealStepsDriver):
    """A background thread that runs the steps moto leaves RUNNING/PENDING.

    moto's EMR never finishes a step (the first stays RUNNING, the others PENDING) and
    runs nothing: this driver plays the cluster. ``complete``: each step's real
    ``spark-submit`` (its moto ``args``) runs on this host (:class:`real_steps.RealSteps`:
    inputs staged from moto, outputs published back to the step's s3:// URIs as Spark's
    ``mode("overwrite")`` leaves them, live progress copied as the jobs write it), one
    at a time, in order; the step ends COMPLETED on exit status 0, else FAILED with its
    real stderr and stdout gzipped to the LogUri (``<LogUri>/<cluster>/steps/<step>/``
    ``stderr.gz``, ``stdout.gz``, as EMR copies them) and the later steps CANCELLED
    (CANCEL_AND_WAIT). ``fail``: the first
    step FAILED with a canned stderr, the later ones CANCELLED. ``fail_reduce``:
    featurize runs for real, reduce FAILED with the canned stderr. ``cluster_fails``:
    once steps are queued, the cluster ends TERMINATED_WITH_ERRORS (a failed bootstrap
    action) and its steps CANCELLED, as EMR does. ``stall``: featurize stays RUNNING,
    its progress report (``--progress``) frozen at :data:`STALLED_AT` images for an
    hour. ``policy`` may be changed between runs; ``leave_out`` (output flags, e.g.
    ``["--output"]`` of reduce) names outputs a completed step never publishes."""

    def __init__(self, s3, policy: str):
        super().__init__()
        self.s3 = s3
        self.policy = policy
        self.leave_out: dict[str, list[str]] = {}  # "featurize"/"reduce" -> output flags
        # running: (cluster id, step id)

    def step(self) -> None:
        for cluster in emr_clusters():
            self.drive(cluster)

    def drive(self, cluster) -> None:
        if cluster.state in CLUSTER_ENDED:
            self.forget(cluster.id)  # its running step ends with it
            return
        if self.policy == "cluster_fails":
            if cluster.steps:
                cluster.state = "TERMINATED_WITH_ERRORS"
                cluster.last_state_change_reason = BOOTSTRAP_FAILURE
                for step in cluster.steps:
                    if step.state not in STEP_ENDED:
                        step.state = "CANCELLED"
            return
        if self.policy == "stall":
            for step in cluster.steps[:1]:
                self.write_progress(list(step.args), "featurize", STALLED)
            return
        failed = False
        for index, step in enumerate(cluster.steps):
            if step.state in STEP_ENDED:
                failed = failed or step.state != "COMPLETED"
                continue
            if failed:
                step.state = "CANCELLED"
            elif self.policy == "fail" or (self.policy == "fail_reduce" and is_reduce(step.args)):
                self.write_stderr(cluster, step, CANNED_STDERR)
                step.state = "FAILED"
                failed = True
            elif not self.run_for_real(cluster, index, step):
                return  # it runs (or another does): the later steps wait, as on EMR

    def run_for_real(self, cluster, index: int, step) -> bool:
        """Start, or look at, the step's real spark-submit; True once it ended (its state
        set), False while it or another step runs."""
        from real_steps import RealSteps

        if self.running is None:
            if cluster.id not in self.runs:
                self.runs[cluster.id] = RealSteps(
                    [{"Name": s.name, "HadoopJarStep": {"Args": list(s.args)}}
                     for s in cluster.steps]
                )  # fmt: skip
            self.runs[cluster.id].start(index)
            self.running = (cluster.id, step.id)
            step.state = "RUNNING"
            return False
        if self.running != (cluster.id, step.id):
            return False
        run = self.runs[cluster.id]
        code = run.poll()
        if code is None:
            return False
        self.running = None
        if code == 0:
            name = "reduce" if is_reduce(step.args) else "featurize"
            run.publish(index, self.leave_out.get(name, ()))
            step.state = "COMPLETED"
        else:
            self.write_stderr(cluster, step, run.output(index, "stderr"))
            self.write_log(cluster, step, "stdout", run.output(index, "stdout"))
            step.state = "FAILED"
        return True

    def write_progress(self, args: list[str], name: str, record: dict) -> None:
        folder = _arg(args, "--progress")
        if folder:
            bucket, prefix = split_uri(folder)
            body = json.dumps({**record, "step": name}).encode()
            self.s3.put_object(Bucket=bucket, Key=f"{prefix}{name}.json", Body=body)

    def write_stderr(self, cluster, step, text: str) -> None:
        self.write_log(cluster, step, "stderr", text)

    def write_log(self, cluster, step, name: str, text: str) -> None:
        """``<LogUri>/<cluster>/steps/<step>/<name>.gz``, where EMR copies a step's logs."""
        bucket, prefix = split_uri(cluster.log_uri)
        key = f"{prefix.rstrip('/')}/{cluster.id}/steps/{step.id}/{name}.gz"
        self.s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(text.encode()))


# --- moto's SSM runs nothing and its EC2 instances boot nothing: the tests play the nodes


class Ec2NodeDriver(RealStepsDriver):
    """A background thread that does what the ec2 backend's nodes would, through S3.

    moto's EC2 instances boot nothing, and its SSM ``send_command`` runs nothing (it
    reports ``Success`` at once, with empty output): this driver plays the nodes. Each
    running primary (tag ``fruits:role=primary``) reports where its user data tells it
    to (the ``LOG_PREFIX`` rendered into it: the attempt's log prefix): ``ready`` writes
    ``ready.json`` naming its instance id; ``bootstrap_fails`` writes
    ``failed/primary.json`` as the user data's error trap does; ``never_ready`` writes
    nothing; ``stale`` writes what an earlier attempt's nodes could have left -- a
    ``ready.json`` at the cluster's own prefix and one at this attempt's naming another
    primary -- and nothing of its own. Once an SSM command that names the attempt's
    prefix exists (the step runner was started), the runner says it runs
    (``runner.json``) and the steps in ``steps.json`` move as ``node.py run-steps``
    would move them (``steps/<id>/state.json``, a failed step's ``stderr``):
    ``complete`` (each step's real spark-submit run on this host, one at a time --
    :class:`real_steps.RealSteps`, its argv mapped back from the node's copy of the
    code and ``s3a://`` to the s3:// URIs the backend submitted -- its outputs published
    to those URIs, COMPLETED on exit status 0, else FAILED with its real stdout and
    stderr and the later steps CANCELLED), ``fail`` (the first FAILED with a canned
    stderr, the later ones CANCELLED), ``fail_reduce`` (featurize for real, reduce
    FAILED, canned), ``runner_dies`` (the runner exits with no step done, its log
    uploaded), ``runner_killed`` (it says it runs, then nothing more),
    ``runner_never_starts`` (nothing at all); then it says it exited."""

    def __init__(self, clients, policy: str, steps: str = "complete"):
        super().__init__()
        self.clients = clients
        self.policy = policy
        self.steps = steps
        self.done: set[str] = set()
        self.started: set[str] = set()  # clusters whose runner said it runs
        self.prefixes: dict[str, tuple[str, str]] = {}  # instance id -> (LOG_, CODE_PREFIX)
        # running: (cluster id, step index)

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

    def user_data_prefixes(self, instance_id: str) -> tuple[str, str]:
        """The key of the log prefix and the URI of the code prefix that the node's user
        data names (``LOG_PREFIX='s3://bucket/...'``, ``CODE_PREFIX='s3://...'``)."""
        if instance_id not in self.prefixes:
            got = self.clients.ec2.describe_instance_attribute(
                InstanceId=instance_id, Attribute="userData"
            )
            script = base64.b64decode(got["UserData"]["Value"]).decode()
            log = re.search(r"^LOG_PREFIX='(s3://[^']+)'$", script, re.M).group(1)
            code = re.search(r"^CODE_PREFIX='(s3://[^']+)'$", script, re.M).group(1)
            self.prefixes[instance_id] = (log.split("/", 3)[3], code)
        return self.prefixes[instance_id]

    def log_prefix(self, instance_id: str) -> str:
        return self.user_data_prefixes(instance_id)[0]

    def drive(self) -> None:
        alive = set()
        for inst, cluster_id in self.primaries():
            alive.add(cluster_id)
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
                code_prefix = self.user_data_prefixes(inst["InstanceId"])[1]
                if self.run_steps(cluster_id, log, code_prefix):
                    self.done.add(cluster_id)
        for cluster_id in set(self.runs) - alive:  # its primary is gone, and its steps
            self.forget(cluster_id)

    def runner_started(self, log: str) -> bool:
        commands = self.clients.ssm.list_commands()["Commands"]
        return any(log in " ".join(c["Parameters"].get("commands", [])) for c in commands) and bool(
            self.keys(log + "steps.json")
        )

    def run_steps(self, cluster_id: str, log: str, code_prefix: str) -> bool:
        """Move the runner and the steps one look further; True once the runner exited
        (or, by the policy, never will say more)."""
        if self.steps == "runner_never_starts":
            return True
        if self.running is not None and self.running[0] != cluster_id:
            return False  # another cluster's step runs: one spark-submit at a time
        spec = json.loads(self.clients.read(log + "steps.json"))
        if cluster_id not in self.started:
            self.started.add(cluster_id)
            self.put(log + "runner.json", {"state": "running", "pid": 4242})
            if self.steps == "runner_killed":  # SIGKILL: no last word, no more beats
                return True
            if self.steps == "runner_dies":
                self.clients.s3.put_object(Bucket=BUCKET, Key=log + "runner.log",
                                           Body=RUNNER_ERROR.encode())  # fmt: skip
                self.put(log + "runner.json", {"state": "exited", "returncode": 1, "error": ""})
                return True
        failed = None
        for index, step in enumerate(spec):
            folder = f"{log}steps/{step['id']}/"
            state = json.loads(self.clients.read(folder + "state.json"))
            if state["state"] in STEP_ENDED:
                failed = failed or (step["id"] if state["state"] != "COMPLETED" else None)
                continue
            reduce = is_reduce(step["argv"])
            if failed:
                state = {"state": "CANCELLED", "reason": f"step {failed} failed"}
            elif self.steps == "fail" or (self.steps == "fail_reduce" and reduce):
                self.clients.s3.put_object(Bucket=BUCKET, Key=folder + "stderr",
                                           Body=CANNED_STDERR.encode())  # fmt: skip
                state = {"state": "FAILED", "returncode": 1}
                failed = step["id"]
            elif self.running is None:
                if cluster_id not in self.runs:
                    from real_steps import RealSteps

                    self.runs[cluster_id] = RealSteps([node_step(s, code_prefix) for s in spec])
                self.runs[cluster_id].start(index)
                self.running = (cluster_id, index)
                self.put(folder + "state.json", {"state": "RUNNING"})
                return False
            else:
                run = self.runs[cluster_id]
                code = run.poll()
                if code is None:
                    return False
                self.running = None
                if code == 0:
                    run.publish(index)
                    state = {"state": "COMPLETED", "returncode": 0}
                else:  # as node_steps' Mirror: the output first, who sees FAILED finds it
                    for name in ("stdout", "stderr"):
                        body = run.output(index, name).encode()
                        self.clients.s3.put_object(Bucket=BUCKET, Key=folder + name, Body=body)
                    state = {"state": "FAILED", "returncode": code}
                    failed = step["id"]
            self.put(folder + "state.json", state)
        self.put(log + "runner.json", {"state": "exited", "returncode": int(bool(failed))})
        self.forget(cluster_id)
        return True

    def keys(self, prefix: str) -> list[str]:
        found = self.clients.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for o in found.get("Contents", [])]

    def put(self, key: str, body: dict) -> None:
        self.clients.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(body).encode())


def node_step(step: dict, code_prefix: str) -> dict:
    """An ec2 step (``steps.json``: the node's ``spark-submit`` argv, from
    :func:`fruits.clusters.common.spark_steps.for_standalone`) back in EMR's format, with
    the URIs the backend submitted: the master dropped, the node's copy of the code
    (``<NODE_HOME>/code/``) read from ``code_prefix``, ``s3a://`` as ``s3://``."""
    from fruits.clusters.ec2.user_data import NODE_HOME

    code_dir = f"{NODE_HOME}/code/"
    code_prefix = code_prefix if code_prefix.endswith("/") else code_prefix + "/"
    argv = step["argv"]
    assert argv[0].endswith("/spark-submit"), argv
    args = ["spark-submit"]
    rest = argv[1:]
    i = 0
    while i < len(rest):
        if rest[i] == "--master":
            i += 2
            continue
        arg = rest[i]
        if arg.startswith(code_dir):
            arg = code_prefix + arg[len(code_dir) :]
        elif arg.startswith("s3a://"):
            arg = "s3://" + arg[len("s3a://") :]
        args.append(arg)
        i += 1
    return {"Name": step["name"], "HadoopJarStep": {"Args": args}}


RUNNER_ERROR = "Traceback (most recent call last):\nModuleNotFoundError: No module named 'boto3'"
NODE_ERROR = "dnf install java-17-amazon-corretto-headless failed (exit status 1)"
