"""Settings and the bucket layout: paths, run keys."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from dag_support import ROOT

from fruits.settings import load_settings


def test_paths_in_settings_are_relative_to_the_project(tmp_path):
    s = load_settings({"FRUITS_INCOMING": "data/x", "FRUITS_SCRATCH": str(tmp_path)})
    assert s.incoming == str(ROOT / "data" / "x")
    assert load_settings({"FRUITS_INCOMING": "s3://src/landing/"}).incoming == "s3://src/landing"
    assert load_settings({"FRUITS_AWS_CONN_ID": "a"}).source_conn_id == "a"
    assert s.scratch == tmp_path
    assert load_settings({}).compute == "local"
    for bad in (
        {"FRUITS_COMPUTE": "k8s"},
        {"FRUITS_VARIANCE": "1.5"},
        {"FRUITS_IMAGE_SIZE": "16"},
        {"FRUITS_MODEL": "resnet"},
        {"FRUITS_EMR_CORE_COUNT": "two"},
        {"FRUITS_EMR_TAGS": "novalue"},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            load_settings(bad)
    assert Path(s.jobs_dir, "featurize.py").is_file()


def test_run_keys_are_key_safe_unique_and_stay_under_runs():
    from fruits.storage.layout import new_run_key, staging_prefix

    run_id = "manual__2026-11-24T00:00:00+00:00"
    a, b = new_run_key(run_id), new_run_key(run_id)
    assert a != b  # every try of plan_run stages somewhere new
    assert a.startswith("manual__2026-11-24T00-00-00-00-00-")
    assert staging_prefix("2026-11-24", a) == f"runs/_staging/batch=2026-11-24/{a}/"
    assert staging_prefix("2026-11-24") == "runs/_staging/batch=2026-11-24/"
    assert new_run_key("../../x y/é").startswith("x-y-")
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="not a run key"):
            staging_prefix("2026-11-24", bad)


@pytest.mark.parametrize(
    ("interval", "mode"),
    [("1", "poke"), ("59", "poke"), ("60", "reschedule"), ("600", "reschedule")],
)
def test_sensors_reschedule_only_when_looks_are_a_minute_apart(interval, mode):
    assert load_settings({"FRUITS_POKE_INTERVAL": interval}).sensor_mode == mode


# --- docs/configuration.md lists exactly what the code reads, with the code's defaults --

DOC = ROOT / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(FRUITS_[A-Z0-9_]+)` \| (`[^`]*`|all cores|empty) \|", re.M)
READ = re.compile(r"[\"'](FRUITS_[A-Z0-9_]*[A-Z0-9])[\"']")  # a whole name, quoted, in code


def documented(text: str) -> dict[str, str]:
    rows = ROW.findall(text)
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a variable is listed twice"
    return {name: default.strip("`") for name, default in rows}


def read_by_code() -> set[str]:
    """Every FRUITS_* name the plugins and the jobs read (as a quoted string in Python)."""
    names = set()
    for base in (ROOT / "plugins" / "fruits", ROOT / "spark_jobs"):
        for path in base.rglob("*.py"):
            names |= set(READ.findall(path.read_text()))
    return names


def code_default(name: str) -> str | None:
    """The default the code uses for ``name``, written as docs/configuration.md writes it;
    None for a variable that is no field of Settings and no special case here."""
    from fruits.clusters.local import jvm_archive, sparkenv
    from fruits_spark.inference import converted

    settings = load_settings({})
    home = str(Path.home())
    special = {
        "FRUITS_LOCAL_CORES": "all cores" if settings.local_cores == os.cpu_count() else "?",
        "FRUITS_JVM_JIT": next(
            k for k, v in sparkenv.JIT_OPTIONS.items() if v == sparkenv.jit_options({})
        ),  # fmt: skip
        "FRUITS_JVM_ARCHIVE": str(jvm_archive.default_folder()).replace(home, "~")
        + "/spark-<key>.jsa",
        "FRUITS_MODEL_CACHE": str(converted.cache_dir()).replace(home, "~")
        if not os.environ.get(converted.CACHE_ENV)
        else "?",
        "FRUITS_INFERENCE_PROFILE": "empty",
        "FRUITS_REDUCE_PROFILE": "empty",
        "FRUITS_INCOMING": str(Path(settings.incoming).relative_to(ROOT)),
        "FRUITS_SOURCE_CONN_ID": "FRUITS_AWS_CONN_ID"
        if settings.source_conn_id == settings.aws_conn_id
        else "?",
    }
    if name in special:
        return special[name]
    short = name.removeprefix("FRUITS_").lower()
    holder: object = settings
    for group in ("emr", "ec2", "serverless"):
        if short.startswith(group + "_"):
            holder, short = getattr(settings, group), short.removeprefix(group + "_")
    if not hasattr(holder, short):
        return None
    value = getattr(holder, short)
    if isinstance(value, Path):
        return str(value.relative_to(ROOT))
    if isinstance(value, bool):
        return str(value).lower()
    if value in ("", {}):
        return "empty"
    return str(value).replace(f"s3://{settings.bucket}/", "s3://<bucket>/")


def test_the_configuration_page_lists_what_the_code_reads():
    docs = documented(DOC.read_text())
    assert len(docs) > 40  # the parser found the tables
    assert set(docs) == read_by_code()


def test_the_configuration_page_gives_the_code_defaults(monkeypatch):
    monkeypatch.delenv("FRUITS_MODEL_CACHE", raising=False)
    wrong = {}
    for name, default in documented(DOC.read_text()).items():
        expected = code_default(name)
        assert expected is not None, f"{name}: no field of Settings and no special case"
        if expected != default:
            wrong[name] = (default, expected)
    assert wrong == {}


def test_the_page_check_catches_a_wrong_or_missing_row():
    text = DOC.read_text()
    docs = documented(text.replace("| `FRUITS_EMR_CORE_COUNT` | `2` |",
                                   "| `FRUITS_EMR_CORE_COUNT` | `3` |"))  # fmt: skip
    assert docs["FRUITS_EMR_CORE_COUNT"] == "3" != code_default("FRUITS_EMR_CORE_COUNT")
    missing = documented(re.sub(r"^\| `FRUITS_STALL_MINUTES` .*\n", "", text, flags=re.M))
    assert "FRUITS_STALL_MINUTES" in read_by_code() - set(missing)


def test_the_local_driver_heap_is_a_jvm_size_spark_accepts():
    from fruits.env_values import ConfigError

    assert load_settings({}).local_driver_memory == "1g"  # Spark's own default
    assert load_settings({"FRUITS_LOCAL_DRIVER_MEMORY": " 1G "}).local_driver_memory == "1g"
    for bad, says in (("448m", "at least 450m"), ("lots", "such as 512m"), ("512", "such as")):
        with pytest.raises(ConfigError, match=f"FRUITS_LOCAL_DRIVER_MEMORY='{bad}': .*{says}"):
            load_settings({"FRUITS_LOCAL_DRIVER_MEMORY": bad})


def test_precision_is_checked_when_the_settings_are_read():
    from fruits.env_values import ConfigError

    assert load_settings({}).precision == "fp32"
    assert load_settings({"FRUITS_PRECISION": "INT8", "FRUITS_MODEL": "mobilenet"}).precision == (
        "int8"
    )
    with pytest.raises(ConfigError, match="FRUITS_PRECISION='fp16': 'fp16' is not one of"):
        load_settings({"FRUITS_PRECISION": "fp16"})
    with pytest.raises(ConfigError, match="int8 is measured for mobilenet only, not mobilenetv2"):
        load_settings({"FRUITS_PRECISION": "int8"})
