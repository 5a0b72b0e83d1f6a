"""The steps' spark-submit wall times, from the local cluster's step files."""

from __future__ import annotations

import json

from bench.scale.step_walls import step_walls


def cluster(tmp_path, states: dict[str, dict]) -> str:
    folder = tmp_path / "clusters" / "local-1"
    steps = [{"id": f"s-{i}", "name": f"{name} batch=2026-01-10", "argv": []}
             for i, name in enumerate(states)]  # fmt: skip
    (folder / "steps").mkdir(parents=True)
    (folder / "steps.json").write_text(json.dumps(steps))
    for step, state in zip(steps, states.values(), strict=True):
        (folder / "steps" / step["id"]).mkdir()
        (folder / "steps" / step["id"] / "state.json").write_text(json.dumps(state))
    return "local-1"


def test_each_step_is_timed_from_its_start_to_its_end(tmp_path):
    cid = cluster(tmp_path, {
        "featurize": {"state": "COMPLETED", "started": "2026-12-06T02:44:44+00:00",
                      "ended": "2026-12-06T02:46:19+00:00"},
        "reduce": {"state": "COMPLETED", "started": "2026-12-06T02:46:19+00:00",
                   "ended": "2026-12-06T02:47:00+00:00"},
    })  # fmt: skip
    assert step_walls(tmp_path, cid) == {"featurize": 95.0, "reduce": 41.0}


def test_a_step_without_an_end_has_no_time(tmp_path):
    cid = cluster(tmp_path, {"featurize": {"state": "RUNNING", "started": "2026-12-06T02:44:44"}})
    assert step_walls(tmp_path, cid) == {"featurize": None}


def test_no_cluster_files_no_figures(tmp_path):
    assert step_walls(tmp_path, "local-2") == {}
    assert step_walls(tmp_path, None) == {}
    assert step_walls(tmp_path, "../../etc") == {}
