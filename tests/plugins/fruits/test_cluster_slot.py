"""The one-cluster-at-a-time rule, as a pure function of the runs' task states."""

from __future__ import annotations

import itertools

from fruits.cluster_slot import GATE, PUBLISH, RELEASE, blocker

RUNNING = {"backfill__2026-01-10", "backfill__2026-01-11", "backfill__2026-01-12",
           "scheduled__2026-11-24"}  # fmt: skip


def running(run_id: str) -> bool:
    return run_id in RUNNING


def test_alone_a_run_may_go():
    assert blocker("backfill__2026-01-10", {}, running) is None
    assert blocker("a", {"a": {GATE: "running"}}, running) is None


def test_a_run_holding_the_cluster_blocks_every_other():
    states = {"scheduled__2026-11-24": {GATE: "success", RELEASE: None}}
    assert "holds the cluster" in blocker("backfill__2026-01-10", states, running)
    states["scheduled__2026-11-24"][RELEASE] = "running"
    assert blocker("backfill__2026-01-10", states, running) is not None
    for done in ("success", "failed"):  # the teardown finished: the cluster is gone
        states["scheduled__2026-11-24"][RELEASE] = done
        assert blocker("backfill__2026-01-10", states, running) is None


def test_runs_that_never_took_the_cluster_do_not_block():
    states = {
        "backfill__2026-01-10": {GATE: "skipped", RELEASE: "skipped"},  # empty batch
        "backfill__2026-01-11": {GATE: "upstream_failed", RELEASE: None},  # bad params
    }
    assert blocker("backfill__2026-01-12", states, running) is None


def test_earlier_waiting_runs_go_first_and_queued_ones_are_not_waited_for():
    states = {"backfill__2026-01-10": {GATE: "up_for_reschedule"}}
    assert "ahead in line" in blocker("backfill__2026-01-11", states, running)
    assert blocker("backfill__2026-01-10", {"backfill__2026-01-11": {GATE: None}}, running) is None
    queued = {"backfill__2026-01-09": {GATE: None}}  # not running: it cannot move
    assert blocker("backfill__2026-01-10", queued, running) is None


def test_three_waiting_runs_exactly_one_goes_whatever_the_order():
    runs = sorted(RUNNING - {"scheduled__2026-11-24"})
    for order in itertools.permutations(runs):
        states = {r: {GATE: "up_for_reschedule", RELEASE: None} for r in order}
        allowed = [r for r in order if blocker(r, states, running) is None]
        assert allowed == [runs[0]]  # one at a time, in date order, no deadlock
        states[runs[0]][GATE] = "success"  # it took the cluster: now nobody else may
        assert [r for r in runs if blocker(r, states, running) is None] == [runs[0]]


def test_a_run_holds_the_slot_until_it_has_published_too():
    """The next run clears the batch's staging: never under a run still publishing."""
    states = {"scheduled__2026-11-24": {GATE: "success", RELEASE: "success", PUBLISH: None}}
    assert "publish_batch" in blocker("backfill__2026-01-10", states, running)
    states["scheduled__2026-11-24"][PUBLISH] = "running"
    assert blocker("backfill__2026-01-10", states, running) is not None
    for done in ("success", "failed", "upstream_failed"):
        states["scheduled__2026-11-24"][PUBLISH] = done
        assert blocker("backfill__2026-01-10", states, running) is None
    # a run of an older DAG version, without publish_batch: its teardown alone counts
    old = {"scheduled__2026-11-23": {GATE: "success", RELEASE: "success"}}
    assert blocker("backfill__2026-01-10", old, running) is None
    old["scheduled__2026-11-23"][RELEASE] = "running"
    assert "remove_cluster" in blocker("backfill__2026-01-10", old, running)
