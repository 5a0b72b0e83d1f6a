"""The JVM class archive (fruits.clusters.local.jvm_archive): where it lives, which Spark
processes map it, and that a JVM started the way we start Spark really loads its classes from it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fruits.clusters.local import jvm_archive
from fruits.clusters.local.spark_install import spark_bin
from fruits.clusters.local.sparkenv import JIT_ENV, spark_env
from fruits.dev import make_jvm_archive

OPTS = ("SPARK_SUBMIT_OPTS", "SPARK_DAEMON_JAVA_OPTS")


def test_no_archive_no_options(monkeypatch, tmp_path):
    monkeypatch.setenv(jvm_archive.ARCHIVE_ENV, str(tmp_path / "missing.jsa"))
    monkeypatch.setenv(JIT_ENV, "tiered")  # the other option spark_env adds
    monkeypatch.delenv("SPARK_SUBMIT_OPTS", raising=False)
    monkeypatch.delenv("SPARK_DAEMON_JAVA_OPTS", raising=False)
    assert jvm_archive.java_options() == ""
    env = spark_env()
    assert not any(env.get(name) for name in OPTS)


def test_off_disables_it_even_when_the_file_exists(monkeypatch):
    monkeypatch.setenv(jvm_archive.ARCHIVE_ENV, "off")
    assert jvm_archive.archive_path() is None and jvm_archive.java_options() == ""
    assert jvm_archive.java_options({jvm_archive.ARCHIVE_ENV: "OFF"}) == ""


def test_drivers_daemons_and_executors_get_it_once(monkeypatch, tmp_path):
    archive = tmp_path / "spark.jsa"
    archive.write_bytes(b"archive")
    monkeypatch.setenv(jvm_archive.ARCHIVE_ENV, str(archive))
    monkeypatch.setenv("SPARK_SUBMIT_OPTS", "-Dmine=1")
    monkeypatch.delenv("SPARK_DAEMON_JAVA_OPTS", raising=False)
    env = spark_env()
    mapped = f"-XX:SharedArchiveFile={archive}"
    submit = env["SPARK_SUBMIT_OPTS"]
    assert submit.startswith("-Dmine=1 ")  # the caller's options kept, first
    assert submit.count(mapped) == 2  # the driver's, and the executors' conf
    assert '-Dspark.executor.extraJavaOptions="' + mapped in submit
    assert env["SPARK_DAEMON_JAVA_OPTS"].count(mapped) == 1
    # an environment that already carries it (a process we started starting another)
    monkeypatch.setenv("SPARK_SUBMIT_OPTS", submit)
    assert spark_env()["SPARK_SUBMIT_OPTS"] == submit
    # off in the environment handed over wins over the file
    off = {jvm_archive.ARCHIVE_ENV: "off", "SPARK_SUBMIT_OPTS": "", JIT_ENV: "tiered"}
    assert not spark_env(off).get("SPARK_SUBMIT_OPTS")


def test_the_default_path_is_named_after_the_java_and_spark_installs(monkeypatch, tmp_path):
    monkeypatch.delenv(jvm_archive.ARCHIVE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    path = jvm_archive.archive_path()
    assert path is not None and path.parent == tmp_path / ".cache" / "fruits-pipeline" / "jvm"
    fake_spark = tmp_path / "spark"
    (fake_spark / "jars").mkdir(parents=True)
    (fake_spark / "jars" / "a.jar").write_bytes(b"1")
    java = jvm_archive._java()
    assert java is not None
    # the JAVA_HOME of the environment handed over, not this process's
    other = tmp_path / "jdk"
    (other / "bin").mkdir(parents=True)
    (other / "bin" / "java").write_text("#!/bin/sh\n")
    assert jvm_archive._java({"JAVA_HOME": str(other)}) == str(other / "bin" / "java")
    before = jvm_archive._key(java, str(fake_spark))
    (fake_spark / "jars" / "b.jar").write_bytes(b"22")
    jvm_archive._key.cache_clear()
    second = jvm_archive._key(java, str(fake_spark))
    assert second != before  # another Spark, another file
    os.utime(fake_spark / "jars" / "a.jar", ns=(1, 1))  # reinstalled: same jar, new mtime
    jvm_archive._key.cache_clear()
    assert jvm_archive._key(java, str(fake_spark)) != second


def test_make_keeps_this_install_and_the_archives_used_last(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(jvm_archive.ARCHIVE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    current = jvm_archive.archive_path()
    assert current is not None
    current.parent.mkdir(parents=True)
    current.write_bytes(b"this install")
    os.utime(current, (1, 1))  # made long ago: still this install's, never removed
    others = [current.parent / f"spark-other{i}.jsa" for i in range(4)]
    for age, other in enumerate(others):  # other0 used last, other3 first
        other.write_bytes(b"another install")
        os.utime(other, (1000 - age, 1000 - age))
    unrelated = current.parent / "notes.txt"
    unrelated.write_text("not an archive")
    assert make_jvm_archive.main() == 0
    kept = sorted(p.name for p in current.parent.iterdir())
    assert kept == sorted([current.name, "spark-other0.jsa", "spark-other1.jsa", "notes.txt"])
    assert current.stat().st_mtime > 1000  # marked as used now
    assert f"removed {others[3]}" in capsys.readouterr().out
    # an archive placed by hand (FRUITS_JVM_ARCHIVE): nothing beside it is removed
    monkeypatch.setenv(jvm_archive.ARCHIVE_ENV, str(current))
    others[3].write_bytes(b"another install")
    os.utime(others[3], (1, 1))
    assert make_jvm_archive.main() == 0 and others[3].exists()


@pytest.mark.spark_submit
def test_a_spark_submit_maps_spark_classes_from_the_archive_and_compiles_with_c1(
    monkeypatch, tmp_path
):
    """``python -m fruits.clusters.local.jvm_archive`` (make's target; a no-op when made) leaves an
    archive that a spark-submit started with spark_env() loads thousands of classes from;
    its driver JVM runs with C1 only (fruits.clusters.local.sparkenv.JIT_ENV's default)."""
    monkeypatch.delenv(jvm_archive.ARCHIVE_ENV, raising=False)
    monkeypatch.delenv(JIT_ENV, raising=False)
    assert make_jvm_archive.main() == 0
    path = jvm_archive.archive_path()
    assert path is not None and path.is_file()
    loaded = tmp_path / "classes.txt"
    env = spark_env()
    env["SPARK_SUBMIT_OPTS"] += f" -Xlog:class+load:file={loaded}"
    job = tmp_path / "job.py"
    job.write_text(
        "from pyspark.sql import SparkSession\n"
        "s = SparkSession.builder.getOrCreate()\n"
        "print('rows', s.range(10).count())\n"
        "jvm = s._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()\n"
        "print('jvm args:', ' '.join(jvm.getInputArguments()))\n"
        "s.stop()\n"
    )
    done = subprocess.run(
        [spark_bin("spark-submit"), "--master", "local[1]", "--conf", "spark.ui.enabled=false",
         str(job)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows 10" in done.stdout
    (args,) = [line for line in done.stdout.splitlines() if line.startswith("jvm args:")]
    assert args.split().count("-XX:TieredStopAtLevel=1") == 1
    java_says = done.stdout.replace(args, "")  # quiet: no CDS message of Java's own
    assert "SharedArchive" not in java_says and "[cds]" not in java_says
    lines = Path(loaded).read_text().splitlines()
    shared = [line for line in lines if "shared objects file" in line]
    spark_classes = [line for line in shared if " org.apache.spark." in line]
    assert len(shared) > len(lines) / 2, (len(shared), len(lines))
    assert len(spark_classes) > 1000


SUM_ON_THE_WORKER = """
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("archive-test").getOrCreate()
print("total", spark.sparkContext.parallelize(range(10), 2).sum())
spark.stop()
"""


def spark_classes_from_the_archive(log: Path) -> int:
    """How many of Spark's classes a JVM's ``-Xlog:class+load`` says came from the
    archive (Java's own base archive is the bottom layer: ours is the top)."""
    return sum(
        " org.apache.spark." in line and "shared objects file (top)" in line
        for line in log.read_text().splitlines()
    )


@pytest.mark.slow
@pytest.mark.spark_submit
def test_every_jvm_of_a_local_cluster_maps_the_archive(monkeypatch, tmp_path):
    """The master, the worker, a step's driver and its executor all load Spark's classes
    from the archive. Java maps it only into a JVM whose class path is the archive's own:
    the cluster hands its secret over with ``--properties-file``, since a
    ``SPARK_CONF_DIR`` of its own would come first on every one of those class paths."""
    from fruits.clusters.local import cluster as local_cluster

    monkeypatch.delenv(jvm_archive.ARCHIVE_ENV, raising=False)
    assert make_jvm_archive.main() == 0
    logs = tmp_path / "classes"
    logs.mkdir()
    monkeypatch.setenv("SPARK_DAEMON_JAVA_OPTS", f"-Xlog:class+load:file={logs}/daemon-%p.txt")
    scratch = tmp_path / "scratch"
    cluster_id = local_cluster.start_cluster(scratch, cores=1, memory="1g", timeout=300)
    try:
        info = local_cluster.read_cluster(scratch, cluster_id)
        job = tmp_path / "job.py"
        job.write_text(SUM_ON_THE_WORKER)
        executors = f"{jvm_archive.java_options()} -Xlog:class+load:file={logs}/executor-%p.txt"
        env = spark_env()
        env["SPARK_SUBMIT_OPTS"] += f" -Xlog:class+load:file={logs}/driver.txt"
        done = subprocess.run(
            [spark_bin("spark-submit"), "--master", info["master_url"],
             "--properties-file", info["properties_file"], "--conf", "spark.ui.enabled=false",
             "--conf", "spark.executor.memory=512m",
             "--conf", f"spark.executor.extraJavaOptions={executors}", str(job)],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert "total 45" in done.stdout
    finally:
        local_cluster.stop_cluster(scratch, cluster_id)
    jvms = {path.name: spark_classes_from_the_archive(path) for path in logs.iterdir()}
    assert sorted(name.split("-")[0].removesuffix(".txt") for name in jvms) == [
        "daemon", "daemon", "driver", "executor"
    ], jvms  # fmt: skip
    # the archive is made by a local[2] job: the standalone daemons' and the executor's
    # own classes are not in it, the classes they share with a driver are
    assert min(jvms.values()) > 200 and jvms["driver.txt"] > 2000, jvms
