"""fruits.clusters.local.sparkenv's JIT rule: drivers, the local cluster's daemons and the
launcher JVM of Spark's scripts compile with C1 only unless FRUITS_JVM_JIT says ``tiered``;
executors always keep Java's default."""

from __future__ import annotations

import pytest

from fruits.clusters.local import jvm_archive
from fruits.clusters.local.sparkenv import JIT_ENV, spark_env
from fruits.env_values import ConfigError

C1 = "-XX:TieredStopAtLevel=1"


@pytest.fixture(autouse=True)
def _clean(monkeypatch, tmp_path):
    archive = tmp_path / "spark.jsa"  # an archive, so the executors' option is there too
    archive.write_bytes(b"archive")
    monkeypatch.setenv(jvm_archive.ARCHIVE_ENV, str(archive))
    for name in (JIT_ENV, "SPARK_SUBMIT_OPTS", "SPARK_DAEMON_JAVA_OPTS", "SPARK_LAUNCHER_OPTS"):
        monkeypatch.delenv(name, raising=False)


def executors_options(submit_opts: str) -> str:
    """The value of the -Dspark.executor.extraJavaOptions="..." in SPARK_SUBMIT_OPTS."""
    return submit_opts.split('-Dspark.executor.extraJavaOptions="', 1)[1].split('"', 1)[0]


def test_drivers_and_daemons_compile_with_c1_by_default_executors_do_not():
    env = spark_env()
    submit = env["SPARK_SUBMIT_OPTS"]
    assert submit.split().count(C1) == 1
    assert env["SPARK_DAEMON_JAVA_OPTS"].split().count(C1) == 1
    assert env["SPARK_LAUNCHER_OPTS"].split() == [C1]  # the JVM that builds their commands
    assert "SharedArchiveFile" in executors_options(submit)
    assert C1 not in executors_options(submit)


def test_tiered_leaves_java_its_default(monkeypatch):
    monkeypatch.setenv(JIT_ENV, " Tiered ")
    env = spark_env()
    assert not any(C1 in env.get(name, "") for name in ("SPARK_SUBMIT_OPTS",
                   "SPARK_DAEMON_JAVA_OPTS", "SPARK_LAUNCHER_OPTS"))  # fmt: skip
    assert C1 in spark_env({JIT_ENV: "c1"})["SPARK_SUBMIT_OPTS"]  # the mapping handed over wins


def test_an_environment_handed_over_keeps_one_copy(monkeypatch):
    first = spark_env()
    monkeypatch.setenv("SPARK_SUBMIT_OPTS", first["SPARK_SUBMIT_OPTS"])
    monkeypatch.setenv("SPARK_DAEMON_JAVA_OPTS", first["SPARK_DAEMON_JAVA_OPTS"])
    monkeypatch.setenv("SPARK_LAUNCHER_OPTS", first["SPARK_LAUNCHER_OPTS"])
    again = spark_env()
    assert again["SPARK_LAUNCHER_OPTS"] == first["SPARK_LAUNCHER_OPTS"]
    assert again["SPARK_SUBMIT_OPTS"] == first["SPARK_SUBMIT_OPTS"]
    assert again["SPARK_DAEMON_JAVA_OPTS"] == first["SPARK_DAEMON_JAVA_OPTS"]


def test_an_unknown_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(JIT_ENV, "c2")
    with pytest.raises(ConfigError, match=f"{JIT_ENV}='c2'.*c1.*tiered"):
        spark_env()
