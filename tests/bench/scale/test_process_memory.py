"""The scale bench's memory groups: which process is which, and the peak of each group's sum."""

from __future__ import annotations

import pytest

from bench.scale.process_memory import (
    AIRFLOW,
    DAEMONS,
    DRIVER,
    EXECUTOR,
    MOTO,
    OTHER,
    PY_WORKERS,
    Peaks,
    ProcessRecord,
    by_task,
    classify,
    describe,
    group_members,
    group_rss,
)

MiB = 2**20
ROOT, MOTO_PID = 100, 50
JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
PY = "/work/main/.venv/bin/python"


def proc(pid: int, *cmdline: str, name: str | None = None, rss_mib: int = 10) -> ProcessRecord:
    return ProcessRecord(pid, name or cmdline[0].rsplit("/", 1)[-1], tuple(cmdline), rss_mib * MiB)


TREE = {
    AIRFLOW: proc(ROOT, PY, "/work/main/.venv/bin/airflow", "dags", "test", "fruits_pipeline"),
    MOTO: proc(MOTO_PID, PY, "/work/main/.venv/bin/moto_server", "-H", "127.0.0.1"),
    DAEMONS: proc(101, JAVA, "-cp", "jars/*", "-Xmx1g", "org.apache.spark.deploy.master.Master",
                  "--host", "127.0.0.1"),
    "worker": proc(102, JAVA, "-cp", "jars/*", "org.apache.spark.deploy.worker.Worker",
                   "spark://127.0.0.1:7077"),
    EXECUTOR: proc(103, JAVA, "-cp", "jars/*", "-Xmx1024M",
                   "org.apache.spark.executor.CoarseGrainedExecutorBackend", "--driver-url", "x"),
    DRIVER: proc(104, JAVA, "-cp", "jars/*", "org.apache.spark.deploy.SparkSubmit",
                 "--master", "spark://127.0.0.1:7077", "featurize.py"),
    PY_WORKERS: proc(105, PY, "-m", "pyspark.daemon"),
    "forked worker": proc(106, PY, "-m", "pyspark.daemon"),
    OTHER: proc(107, PY, "/work/main/plugins/fruits/clusters/common/step_runner.py", "/x"),
    "python driver": proc(108, PY, "/scratch/code/featurize.py", "--input", "/scratch/raw"),
    "shell": proc(109, "/bin/bash", "spark-class"),
    "launcher": proc(110, JAVA, "-Xmx128m", "-cp", "jars/*", "org.apache.spark.launcher.Main",
                     "org.apache.spark.deploy.SparkSubmit", "--master", "spark://x"),
}  # fmt: skip
EXPECTED = {AIRFLOW: AIRFLOW, MOTO: MOTO, DAEMONS: DAEMONS, "worker": DAEMONS,
            EXECUTOR: EXECUTOR, DRIVER: DRIVER, PY_WORKERS: PY_WORKERS,
            "forked worker": PY_WORKERS, OTHER: OTHER, "python driver": OTHER,
            "shell": OTHER, "launcher": OTHER}  # fmt: skip


@pytest.mark.parametrize("which", sorted(TREE))
def test_each_process_of_a_run_falls_in_its_group(which):
    assert classify(TREE[which], root_pid=ROOT, moto_pid=MOTO_PID) == EXPECTED[which]


def test_the_root_is_the_airflow_task_whatever_its_command_line():
    spark_looking = proc(ROOT, JAVA, "org.apache.spark.deploy.SparkSubmit")
    assert classify(spark_looking, root_pid=ROOT, moto_pid=None) == AIRFLOW


def test_moto_is_known_by_its_command_line_too():
    assert classify(TREE[MOTO], root_pid=ROOT, moto_pid=None) == MOTO
    assert classify(TREE[MOTO], root_pid=ROOT, moto_pid=None) != OTHER


def test_a_java_process_is_recognised_by_name_when_its_command_line_is_hidden():
    hidden = ProcessRecord(110, "java", (), 5 * MiB)
    assert classify(hidden, root_pid=ROOT, moto_pid=MOTO_PID) == DAEMONS


def test_a_sample_sums_each_group():
    sample = group_rss(TREE.values(), root_pid=ROOT, moto_pid=MOTO_PID)
    assert sample[PY_WORKERS] == (20 * MiB, 2)
    assert sample[DAEMONS] == (20 * MiB, 2)
    assert sample[OTHER] == (40 * MiB, 4)  # step runner, python driver, shell, launcher
    assert sample[DRIVER] == (10 * MiB, 1)


def test_the_peak_is_of_the_sum_at_one_moment_not_the_sum_of_peaks():
    peaks = Peaks()

    def workers(*mibs: int) -> dict:
        procs = [proc(200 + i, PY, "-m", "pyspark.daemon", rss_mib=m) for i, m in enumerate(mibs)]
        return group_rss(procs, root_pid=ROOT, moto_pid=MOTO_PID)

    peaks.add(workers(100, 100))  # two workers at once: 200
    peaks.add(workers(150))  # one bigger worker later: 150
    peaks.add(workers(60, 60, 60))  # three small ones: 180
    assert peaks.rss[PY_WORKERS] == 200 * MiB  # not 350 (sum of peaks) nor 150 (one process)
    assert peaks.processes[PY_WORKERS] == 3
    assert peaks.samples == 3


def test_moto_is_reported_but_not_counted_in_the_total():
    peaks = Peaks()
    peaks.add({AIRFLOW: (300 * MiB, 1), MOTO: (900 * MiB, 1)})
    peaks.add({AIRFLOW: (200 * MiB, 1), EXECUTOR: (400 * MiB, 1)})
    report = peaks.as_dict()
    assert report["counted_total_peak_mib"] == 600.0  # the second sample's; moto left out
    assert report["groups"][MOTO] == {
        "peak_mib": 900.0, "max_processes": 1, "counted": False, "at_peak": [],
        "peak_at": None}  # fmt: skip
    assert report["groups"][AIRFLOW]["counted"] is True
    assert list(report["groups"]) == [AIRFLOW, EXECUTOR, MOTO]  # GROUPS' order


def test_the_processes_at_a_groups_peak_are_named():
    records = list(TREE.values())
    members = group_members(records, root_pid=ROOT, moto_pid=MOTO_PID)
    assert members[DAEMONS] == ["java org.apache.spark.deploy.master.Master",
                                "java org.apache.spark.deploy.worker.Worker"]  # fmt: skip
    assert members[PY_WORKERS] == ["python -m pyspark.daemon"] * 2
    assert members[AIRFLOW] == ["python airflow"]
    assert "python featurize.py" in members[OTHER]
    peaks = Peaks()
    peaks.add(group_rss(records, root_pid=ROOT, moto_pid=MOTO_PID), members)
    peaks.add({DAEMONS: (1, 1)}, {DAEMONS: ["java x"]})  # lower: the peak's members stay
    assert peaks.as_dict()["groups"][DAEMONS]["at_peak"] == members[DAEMONS]
    assert members[DRIVER] == ["java org.apache.spark.deploy.SparkSubmit featurize.py"]


def test_a_groups_peak_keeps_the_time_it_was_seen():
    peaks = Peaks()
    peaks.add({AIRFLOW: (300 * MiB, 1)}, now=100.0)
    peaks.add({AIRFLOW: (500 * MiB, 1)}, now=105.5)
    peaks.add({AIRFLOW: (400 * MiB, 1)}, now=110.0)  # lower: the peak's time stays
    assert peaks.as_dict()["groups"][AIRFLOW]["peak_at"] == 105.5
    assert describe(proc(1, "/bin/bash", "/opt/spark/bin/spark-class")) == "bash spark-class"


def test_a_jvms_fork_before_its_exec_is_not_counted_twice_but_python_workers_are():
    driver = TREE[DRIVER]
    fork = ProcessRecord(200, driver.name, driver.cmdline, driver.rss, ppid=driver.pid)
    spawned = ProcessRecord(201, "chmod", ("/bin/chmod", "644", "x"), MiB, ppid=driver.pid)
    daemon = TREE[PY_WORKERS]
    worker = ProcessRecord(202, daemon.name, daemon.cmdline, daemon.rss, ppid=daemon.pid)
    sample = group_rss([driver, fork, spawned, daemon, worker], root_pid=ROOT, moto_pid=MOTO_PID)
    assert sample[DRIVER] == (10 * MiB, 1)  # the fork is the driver's own pages
    assert sample[PY_WORKERS] == (20 * MiB, 2)  # a forked worker is a worker
    assert sample[OTHER] == (MiB, 1)  # once exec'd, the child is what it runs


def test_by_task_splits_the_one_process_by_the_task_then_running():
    peaks = Peaks()
    for now, rss in ((0.0, 300), (1.0, 420), (2.0, 380), (3.0, 380), (4.0, 700), (5.0, 650)):
        peaks.add({AIRFLOW: (rss * MiB, 1), DRIVER: (100 * MiB, 1)}, now=now)
    peaks.add({DRIVER: (100 * MiB, 1)}, now=6.0)  # the group absent: skipped

    def task_of(when: float) -> str | None:
        return "upload_batch" if when < 2.5 else ("wait_for_step" if when < 5.5 else None)

    table = by_task(peaks.series, task_of)
    assert table == {
        "upload_batch": {"start_mib": 300.0, "peak_mib": 420.0, "growth_mib": 120.0},
        "wait_for_step": {"start_mib": 380.0, "peak_mib": 700.0, "growth_mib": 320.0},
    }
    assert by_task(peaks.series, task_of, DRIVER)["wait_for_step"]["growth_mib"] == 0.0
