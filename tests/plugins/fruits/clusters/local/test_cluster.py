"""The local backend's bookkeeping, without Spark: the teardown ends exactly the
recorded process groups, a vanished runner is noticed, a retry never wipes outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from dag_support import BUCKET

from fruits.clusters.common import step_runner
from fruits.clusters.local import cluster as local_cluster
from fruits.clusters.local import process_groups
from fruits.clusters.local import steps as local_steps
from fruits.clusters.local.sparkenv import spark_env

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]
# a process group: a leader and a child (as spark-submit -> driver, worker -> executors)
FAMILY = [sys.executable, "-c", (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); time.sleep(300)"
)]  # fmt: skip


def fake_cluster(scratch: Path, processes: dict, cluster_id="local-test-1") -> Path:
    folder = local_cluster.cluster_dir(scratch, cluster_id)
    (folder / "s3").mkdir(parents=True)
    (folder / "logs").mkdir()
    (folder / "cluster.json").write_text(
        json.dumps(
            {"id": cluster_id, "dir": str(folder), "processes": processes, "state": "RUNNING"}
        )
    )
    return folder


def spawn(argv, folder: Path, name: str) -> dict:
    return process_groups.spawn(argv, folder / f"{name}.log", spark_env())


def test_teardown_ends_exactly_the_recorded_process_groups(tmp_path):
    logs = tmp_path / "logs"
    recorded = {
        "master": spawn(SLEEPER, logs, "master"),
        "worker": spawn(FAMILY, logs, "worker"),
    }
    bystander = subprocess.Popen(SLEEPER, start_new_session=True)  # not ours to end
    try:
        time.sleep(0.5)
        child = psutil.Process(recorded["worker"]["pid"]).children()
        assert child, "the worker's child should be running"
        folder = fake_cluster(tmp_path, recorded)
        ended = local_cluster.stop_cluster(tmp_path, "local-test-1")
        assert ended == {"steps": "not running", "worker": "stopped", "master": "stopped"}
        for proc in [*recorded.values(), {"pid": child[0].pid}]:
            assert (
                not psutil.pid_exists(proc["pid"])
                or psutil.Process(proc["pid"]).status() == psutil.STATUS_ZOMBIE
            )
        assert bystander.poll() is None  # still running
        assert not (folder / "s3").exists() and (folder / "logs").exists()
        info = json.loads((folder / "cluster.json").read_text())
        assert info["state"] == "TERMINATED"
        # again: nothing left to end, no error
        assert set(local_cluster.stop_cluster(tmp_path, "local-test-1").values()) == {"not running"}
    finally:
        bystander.kill()
        bystander.wait()


def test_a_reused_pid_is_not_ours(tmp_path):
    other = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        impostor = {"pid": other.pid, "create_time": psutil.Process(other.pid).create_time() - 60}
        fake_cluster(tmp_path, {"master": impostor})
        assert local_cluster.stop_cluster(tmp_path, "local-test-1")["master"] == "not running"
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_steps_left_running_by_a_dead_runner_are_interrupted(tmp_path):
    folder = fake_cluster(tmp_path, {"steps": {"pid": 999_999_999, "create_time": 1.0}})
    for sid, state in (("s-1", "COMPLETED"), ("s-2", "RUNNING")):
        (folder / "steps" / sid).mkdir(parents=True)
        step_runner.write_state(folder / "steps" / sid, state=state)
    (folder / "steps" / "s-2" / "stderr").write_text("26/11/24 10:00:00 INFO noise\nboom\n")
    with pytest.raises(local_steps.StepFailed) as err:
        local_steps.wait_for_steps(tmp_path, "local-test-1", ["s-1", "s-2"], timeout=5)
    assert "step s-2 INTERRUPTED" in str(err.value)
    assert "boom" in str(err.value) and "noise" not in str(err.value)


def test_step_runner_cancels_the_steps_after_a_failure(tmp_path):
    steps = [
        {"id": "s-a", "name": "ok", "argv": [sys.executable, "-c", "print('hello')"]},
        {"id": "s-b", "name": "bad", "argv": [sys.executable, "-c", "import sys; sys.exit(3)"]},
        {"id": "s-c", "name": "never", "argv": [sys.executable, "-c", "open('ran', 'w')"]},
    ]
    (tmp_path / "steps.json").write_text(json.dumps(steps))
    assert step_runner.run(tmp_path) == 1
    states = {s["id"]: step_runner.read_state(tmp_path / "steps" / s["id"]) for s in steps}
    assert [states[s]["state"] for s in ("s-a", "s-b", "s-c")] == [
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    ]
    assert states["s-b"]["returncode"] == 3
    assert (tmp_path / "steps" / "s-a" / "stdout").read_text() == "hello\n"
    assert not (tmp_path / "ran").exists()


def test_uploading_without_local_outputs_never_wipes_s3(tmp_path, moto, aws):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    aws.s3.create_bucket(Bucket=BUCKET)
    key = "runs/batch=2026-11-24/features/part-0.parquet"
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=b"earlier run")
    folder = fake_cluster(tmp_path, {})
    uri = f"s3://{BUCKET}/runs/batch=2026-11-24/features/"
    (folder / "outputs.json").write_text(json.dumps({uri: str(folder / "s3" / "gone")}))
    with pytest.raises(local_cluster.ClusterError, match="nothing uploaded"):
        local_steps.upload_outputs(tmp_path, "local-test-1", S3Hook(aws_conn_id="aws_default"))
    assert aws.read(key) == b"earlier run"


def test_cluster_ids_cannot_escape_the_scratch_folder(tmp_path):
    for bad in ("../etc", "local-../../x", "j-123", ""):
        with pytest.raises(local_cluster.ClusterError):
            local_cluster.cluster_dir(tmp_path, bad)


def test_published_reports_name_the_steps_arguments_by_their_s3_uri(tmp_path):
    """The jobs' Parquet already names images by s3:// URIs (featurize's --name-input-as):
    it is published untouched; the report, which names the staged copies, is rewritten."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "cluster" / "s3"
    out = root / BUCKET / "runs" / "batch=1" / "report"
    out.mkdir(parents=True)
    table = pa.table({"path": [f"s3://{BUCKET}/raw/batch=1/Pêche/a b.jpg"], "label": ["Pêche"]})
    pq.write_table(table, out / "part-0.parquet")
    before = (out / "part-0.parquet").read_bytes()
    (out / "report.json").write_text(
        json.dumps({"inputs": {"input": f"{root}/{BUCKET}/x", "output": f"file:{root}/{BUCKET}/y"}})
    )
    for name in ("part-0.parquet", "report.json"):  # Hadoop's checksums of what Spark wrote
        (out / f".{name}.crc").write_bytes(b"crc of the file as Spark wrote it")

    local_steps.rewrite_report(out, root)
    # a stale checksum would fail the next reader (ChecksumException): gone with its file
    assert sorted(p.name for p in out.iterdir()) == [".part-0.parquet.crc", "part-0.parquet",
                                                     "report.json"]  # fmt: skip
    assert (out / "part-0.parquet").read_bytes() == before
    report = json.loads((out / "report.json").read_text())
    assert report == {"inputs": {"input": f"s3://{BUCKET}/x", "output": f"s3://{BUCKET}/y"}}


def test_stop_all_ends_every_cluster_still_running(tmp_path):
    a = fake_cluster(tmp_path, {"master": spawn(SLEEPER, tmp_path / "l", "a")}, "local-a")
    b = fake_cluster(tmp_path, {"master": spawn(SLEEPER, tmp_path / "l", "b")}, "local-b")
    local_cluster.stop_cluster(tmp_path, "local-b")
    done = subprocess.run(
        [sys.executable, "-m", "fruits.clusters.local.cluster", "stop-all", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "local-a: " in done.stdout and "local-b" not in done.stdout
    for folder in (a, b):
        info = json.loads((folder / "cluster.json").read_text())
        assert info["state"] == "TERMINATED"
        pid = info["processes"]["master"]["pid"]
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_steps_over_their_timeout_fail_and_the_teardown_ends_them(tmp_path):
    """The local twin of the EMR sensor's timeout: a step still RUNNING (its runner
    alive) after ``timeout`` fails the wait; the teardown then ends the runner."""
    folder = fake_cluster(tmp_path, {})
    runner = spawn(SLEEPER, folder / "logs", "steps")
    info = json.loads((folder / "cluster.json").read_text())
    info["processes"] = {"steps": runner}
    (folder / "cluster.json").write_text(json.dumps(info))
    (folder / "steps" / "s-1").mkdir(parents=True)
    step_runner.write_state(folder / "steps" / "s-1", state="RUNNING")
    started = time.monotonic()
    with pytest.raises(local_steps.StepFailed, match=r"did not finish within 1s"):
        local_steps.wait_for_steps(tmp_path, "local-test-1", ["s-1"], timeout=1, poke_interval=0.2)
    assert time.monotonic() - started < 30
    assert local_cluster.stop_cluster(tmp_path, "local-test-1")["steps"] == "stopped"
    assert (
        not psutil.pid_exists(runner["pid"])
        or psutil.Process(runner["pid"]).status() == psutil.STATUS_ZOMBIE
    )


def test_the_next_run_reaps_clusters_whose_owner_is_gone(tmp_path):
    """A run killed with its process (``airflow dags test`` killed) leaves its cluster:
    the next run stops it; a cluster whose owner lives, or a terminated one, is left."""
    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait()
    owners = {
        "local-orphan": {"pid": dead_owner.pid, "create_time": 1.0},
        "local-owned": {"pid": os.getpid(), "create_time": psutil.Process().create_time()},
    }
    folders = {}
    for cluster_id, owner in owners.items():
        master = spawn(SLEEPER, tmp_path / "l", cluster_id)
        folders[cluster_id] = fake_cluster(tmp_path, {"master": master}, cluster_id)
        info = json.loads((folders[cluster_id] / "cluster.json").read_text())
        info["owner"] = owner
        (folders[cluster_id] / "cluster.json").write_text(json.dumps(info))
    try:
        reaped = local_cluster.reap_abandoned(tmp_path)
        assert reaped == {"local-orphan": {"steps": "not running", "worker": "not running",
                                           "master": "stopped"}}  # fmt: skip
        assert local_cluster.reap_abandoned(tmp_path) == {}  # TERMINATED now
        owned = json.loads((folders["local-owned"] / "cluster.json").read_text())
        assert process_groups.alive(owned["processes"]["master"])
    finally:
        local_cluster.stop_all(tmp_path)


# A leader that ignores SIGTERM (a JVM busy shutting down on a loaded host), and one that
# exits only some time after it: both must be collected before the teardown returns.
STUBBORN = [sys.executable, "-c", (
    "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "pathlib.Path(sys.argv[1]).touch(); time.sleep(300)"
)]  # fmt: skip
SLOW_TO_EXIT = [sys.executable, "-c", (
    "import pathlib, signal, sys, time; "
    "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.7), sys.exit(0))); "
    "pathlib.Path(sys.argv[1]).touch(); time.sleep(300)"
)]  # fmt: skip


def spawn_ready(argv: list[str], tmp_path: Path) -> dict:
    ready = tmp_path / "ready"
    proc = spawn([*argv, str(ready)], tmp_path / "logs", "leader")
    deadline = time.monotonic() + 60
    while not ready.exists():  # its signal handler is in place
        assert time.monotonic() < deadline, "the test process did not start"
        time.sleep(0.05)
    return proc


def assert_collected(pid: int) -> None:
    """Not running and not a zombie: its exit status was collected."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def test_a_leader_that_dies_late_after_sigkill_is_collected(tmp_path, monkeypatch):
    """SIGKILL lands some time after killpg returns (as on a busy host): the teardown
    waits for the death instead of looking once and leaving a zombie."""
    import signal
    import threading

    real_killpg = os.killpg

    def late_kill(pgid, sig):
        if sig == signal.SIGKILL:
            threading.Timer(0.5, real_killpg, (pgid, sig)).start()
        else:
            real_killpg(pgid, sig)

    proc = spawn_ready(STUBBORN, tmp_path)
    monkeypatch.setattr(process_groups.os, "killpg", late_kill)
    assert process_groups.end_group("worker", proc, grace=0.5) == "killed"
    assert_collected(proc["pid"])


def test_a_leader_that_exits_some_time_after_sigterm_is_collected(tmp_path):
    proc = spawn_ready(SLOW_TO_EXIT, tmp_path)
    assert process_groups.end_group("worker", proc, grace=20) == "stopped"
    assert_collected(proc["pid"])


# Exits on SIGTERM only once its peer got SIGTERM too (the peer's marker file exists).
WAITS_FOR_PEER = [sys.executable, "-c", (
    "import pathlib, signal, sys, time\n"
    "me, peer, ready = (pathlib.Path(p) for p in sys.argv[1:4])\n"
    "def stop(*args):\n"
    "    me.touch()\n"
    "    deadline = time.monotonic() + 120\n"
    "    while not peer.exists() and time.monotonic() < deadline:\n"
    "        time.sleep(0.05)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "ready.touch()\n"
    "time.sleep(300)\n"
)]  # fmt: skip


def test_the_teardown_signals_every_group_before_waiting_for_any(tmp_path):
    """The worker and the master shut down side by side: each of these two exits only
    once the other got SIGTERM too, so a teardown that waited for one group before
    signalling the next would have to kill the first after its grace."""
    marks = {role: tmp_path / f"{role}.stopping" for role in ("worker", "master")}
    peers = {"worker": marks["master"], "master": marks["worker"]}
    recorded = {
        role: spawn_ready([*WAITS_FOR_PEER, str(marks[role]), str(peers[role])], tmp_path / role)
        for role in ("worker", "master")
    }
    fake_cluster(tmp_path, recorded)
    ended = local_cluster.stop_cluster(tmp_path, "local-test-1")
    assert ended == {"steps": "not running", "worker": "stopped", "master": "stopped"}
    for proc in recorded.values():
        assert_collected(proc["pid"])


def test_groups_ended_together_are_each_stopped_or_killed(tmp_path):
    stubborn = spawn_ready(STUBBORN, tmp_path / "stubborn")
    polite = spawn_ready(SLOW_TO_EXIT, tmp_path / "polite")
    ended = process_groups.end_groups(
        {"steps": None, "worker": stubborn, "master": polite}, grace=5
    )
    assert ended == {"steps": "not running", "worker": "killed", "master": "stopped"}
    assert_collected(stubborn["pid"])
    assert_collected(polite["pid"])


TINY_JOB = """
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("auth-test").getOrCreate()
print("total", spark.sparkContext.parallelize(range(10), 2).sum())  # on the worker
spark.stop()
"""


@pytest.mark.slow
def test_the_cluster_authenticates_with_a_secret_of_its_own(tmp_path):
    """spark.authenticate: the master, the worker and the steps' drivers share a secret
    made for this cluster, kept in a file only its owner reads (named with
    ``--properties-file``; no ``SPARK_CONF_DIR``, which would cost every JVM the class
    archive) and on no command line; a driver without it is refused."""
    scratch = tmp_path / "scratch"
    cluster_id = local_cluster.start_cluster(scratch, cores=1, memory="1g", timeout=300)
    try:
        info = local_cluster.read_cluster(scratch, cluster_id)
        folder = Path(info["dir"])
        conf_file = folder / "conf" / "spark.properties"
        assert info["properties_file"] == str(conf_file)
        assert conf_file.stat().st_mode & 0o777 == 0o600
        conf = dict(line.split(" ", 1) for line in conf_file.read_text().splitlines())
        assert conf["spark.authenticate"] == "true"
        secret = conf["spark.authenticate.secret"]
        assert len(secret) == 64 and int(secret, 16)
        for role in ("master", "worker"):
            proc = psutil.Process(info["processes"][role]["pid"])
            assert secret not in " ".join(proc.cmdline())
            assert "--properties-file" in proc.cmdline()
            class_path = proc.cmdline()[proc.cmdline().index("-cp") + 1]
            assert str(folder) not in class_path  # which would cost it the class archive
        assert "authentication enabled" in (folder / "logs" / "master.log").read_text()
        # the drivers of the steps are handed its file and run on the worker
        job = tmp_path / "job.py"
        job.write_text(TINY_JOB)
        submit = [
            str(Path(sys.executable).parent / "spark-submit"), "--master", info["master_url"],
            "--properties-file", info["properties_file"],
            "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=512m",
            str(job),
        ]  # fmt: skip
        (folder / "steps.json").write_text(json.dumps([{"id": "s-1", "argv": submit}]))
        assert step_runner.run(folder) == 0, (folder / "steps" / "s-1" / "stderr").read_text()
        assert "total 45" in (folder / "steps" / "s-1" / "stdout").read_text()
        # without the secret, a driver is turned away
        refused = subprocess.run(
            [*submit[:3], "--conf", "spark.ui.enabled=false", "--conf",
             "spark.executor.memory=512m", str(job)],
            env=spark_env(), capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "total 45" not in refused.stdout
    finally:
        local_cluster.stop_cluster(scratch, cluster_id)
    assert not conf_file.exists()  # the secret ends with the cluster
    other = local_cluster.start_cluster(scratch, cores=1, memory="512m", timeout=300)
    try:
        other_conf = Path(local_cluster.read_cluster(scratch, other)["properties_file"])
        assert secret not in other_conf.read_text()
    finally:
        local_cluster.stop_cluster(scratch, other)
