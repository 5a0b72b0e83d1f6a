"""Settings and the bucket layout: paths, run keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from dag_support import ROOT

from fruits.settings import load_settings


def test_paths_in_settings_are_relative_to_the_project(tmp_path):
    s = load_settings({"FRUITS_INCOMING": "data/x", "FRUITS_SCRATCH": str(tmp_path)})
    assert s.incoming == ROOT / "data" / "x"
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
