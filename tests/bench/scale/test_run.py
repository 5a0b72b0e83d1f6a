"""The scale bench's plan, per-run arithmetic and saving (no real run: bench.scale.run's parts)."""

from __future__ import annotations

import pytest

from bench.scale import run
from bench.scale.options import parse_args
from bench.scale.run import plan, ratios, stages


def test_the_plan_is_a_warmup_then_a_date_per_size_then_the_daily_batches():
    items = plan(parse_args(["--sizes", "600,300", "--backfill-days", "2",
                             "--backfill-images", "200"]))  # fmt: skip
    assert [(i["kind"], i["size"], i["date"]) for i in items] == [
        ("warmup", 131, "2026-01-01"),
        ("scale", 300, "2026-01-10"),
        ("scale", 600, "2026-01-11"),
        ("backfill", 200, "2026-02-01"),
        ("backfill", 200, "2026-02-02"),
    ]
    assert len({i["seed"] for i in items if i["kind"] == "backfill"}) == 2  # two batches
    assert [i["kind"] for i in plan(parse_args(["--no-warmup", "--backfill-days", "0"]))] == [
        "scale", "scale", "scale"]  # fmt: skip


@pytest.mark.parametrize("bad", ["", "0,10", "ten"])
def test_sizes_must_be_whole_numbers_above_zero(bad):
    with pytest.raises(SystemExit):
        parse_args(["--sizes", bad])


def test_a_runs_stages_and_ratios():
    tasks = {"upload_batch": {"seconds": 10.0}, "add_steps": {"seconds": 7.0},
             "publish_batch": {"seconds": 2.0}, "remove_cluster": {"seconds": 1.0}}  # fmt: skip
    summary = {"step_seconds": {"featurize": 40.0, "reduce": 8.0}}
    stage = stages(tasks, summary, 5.0, {"featurize": 60.0}, 100.0, 110.0)
    assert stage == {"upload": 10.0, "staging": 5.0, "featurize": 40.0, "featurize_wall": 60.0,
                     "reduce": 8.0, "reduce_wall": None, "publish": 2.0, "teardown": 1.0,
                     "dag_run": 100.0, "wall": 110.0}  # fmt: skip
    assert ratios(stage) == {"end_to_end_vs_featurize": 2.5, "upload_staging_share": 0.15}
    assert ratios({**stage, "featurize": None, "staging": None}) == {
        "end_to_end_vs_featurize": None, "upload_staging_share": None}  # fmt: skip


def test_each_finished_run_is_saved_before_the_next_starts(monkeypatch, tmp_path):
    class FakeMoto:
        pid, endpoint = 1, "http://127.0.0.1:1"

        def __init__(self, log):
            self.stopped = False

        def start(self):
            return self

        def stop(self):
            self.stopped = True

    def measure(item, *rest):
        if item["date"] == "2026-01-11":
            raise RuntimeError("the second run dies")
        return {"date": item["date"]}

    monkeypatch.setattr(run, "Moto", FakeMoto)
    monkeypatch.setattr(run, "pipeline_env", lambda *a: {})
    monkeypatch.setattr(run, "use_env", lambda env: None)
    monkeypatch.setattr(run, "fresh_airflow", lambda *a: None)
    monkeypatch.setattr(run, "measure_run", measure)
    items = [{"kind": "scale", "date": d} for d in ("2026-01-10", "2026-01-11")]
    results: dict = {"warmup": [], "runs": []}
    seen: list[list[str]] = []
    config = type("Config", (), {"logs": tmp_path, "airflow_home": tmp_path})()
    args = type("Args", (), {"keep_objects": False})()
    with pytest.raises(RuntimeError):
        run.run_all(args, items, [None, None], config, results,
                    lambda: seen.append([r["date"] for r in results["runs"]]))  # fmt: skip
    assert seen == [["2026-01-10"]]  # saved once, with the run that finished
