"""The scale bench's run environment: scripts/lib.sh's, with the bench's settings only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.scale.pipeline import ROOT, BenchBusy, RunConfig, lock_work, pipeline_env
from fruits.settings import load_settings

CONFIG = RunConfig(work=Path("/tmp/bench-scale"), bucket="fruits-bench-scale", image_size=96,
                   model="mobilenet", weights="imagenet")  # fmt: skip
CALLER = {"PATH": "/usr/bin", "HOME": "/root", "FRUITS_VARIANCE": "0.5",
          "FRUITS_COMPUTE": "emr", "FRUITS_MODEL_CACHE": "/cache", "AWS_PROFILE": "prod",
          "AWS_ACCESS_KEY_ID": "AKIA..."}  # fmt: skip


def test_the_settings_the_pipeline_reads_are_the_benchs():
    env = pipeline_env(CALLER, CONFIG, "http://127.0.0.1:5000")
    settings = load_settings(env)
    assert settings.compute == "local"
    assert settings.incoming == "/tmp/bench-scale/data/incoming"
    assert settings.scratch == Path("/tmp/bench-scale/scratch")
    assert (settings.bucket, settings.image_size, settings.poke_interval) == (
        "fruits-bench-scale", 96, 2)  # fmt: skip
    assert (settings.model, settings.weights) == ("mobilenet", "imagenet")
    assert settings.variance == 0.95  # the caller's FRUITS_VARIANCE is not the bench's


def test_every_fruits_variable_set_is_one_the_settings_read():
    source = (ROOT / "plugins" / "fruits" / "settings.py").read_text()
    env = pipeline_env({}, CONFIG, "http://127.0.0.1:5000")
    names = [name for name in env if name.startswith("FRUITS_")]
    assert len(names) == 8
    assert [name for name in names if f'"{name}"' not in source] == []


def test_no_real_aws_account_and_moto_on_loopback():
    env = pipeline_env(CALLER, CONFIG, "http://127.0.0.1:5000")
    assert "AWS_PROFILE" not in env and "AWS_ACCESS_KEY_ID" not in env
    assert env["AWS_CONFIG_FILE"] == env["AWS_SHARED_CREDENTIALS_FILE"] == "/dev/null"
    extra = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])["extra"]
    assert extra == {"endpoint_url": "http://127.0.0.1:5000", "region_name": "us-east-1"}
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert env["FRUITS_MODEL_CACHE"] == "/cache"  # where caches live is the caller's


def test_airflow_lives_in_the_bench_folder():
    env = pipeline_env(CALLER, CONFIG, "http://127.0.0.1:5000")
    assert env["AIRFLOW_HOME"] == "/tmp/bench-scale/airflow"
    assert (
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        == "sqlite:////tmp/bench-scale/airflow/airflow.db"
    )
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert env["PATH"].split(":")[0].endswith("/bin") and env["PATH"].endswith(":/usr/bin")


def test_one_bench_at_a_time_in_a_work_folder(tmp_path):
    held = lock_work(tmp_path / "work")
    with pytest.raises(BenchBusy, match="--work-dir"):
        lock_work(tmp_path / "work")
    lock_work(tmp_path / "other").close()  # another folder is free
    held.close()
    lock_work(tmp_path / "work").close()  # free again once the first bench ends
