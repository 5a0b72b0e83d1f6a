"""The quorum rule of an ``ec2`` cluster (the primary's ready logic and the
``wait_for_cluster`` sensor both use it): one lost spot worker does not fail a run."""

from __future__ import annotations

import pytest

from fruits.clusters.common.standalone import declare_ready, quorum


@pytest.mark.parametrize(
    ("workers", "needed"), [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (10, 5), (11, 6)]
)
def test_a_quorum_is_half_the_workers_rounded_up(workers, needed):
    assert quorum(workers) == needed


@pytest.mark.parametrize("workers", [0, -1])
def test_a_cluster_without_workers_has_no_quorum(workers):
    with pytest.raises(ValueError, match="at least one worker"):
        quorum(workers)


def test_every_worker_joined_is_ready_at_once():
    assert declare_ready(alive=3, workers=3, quorum_for=0, grace=120)


def test_a_quorum_is_ready_only_once_it_held_for_the_grace():
    assert not declare_ready(alive=2, workers=3, quorum_for=119, grace=120)
    assert declare_ready(alive=2, workers=3, quorum_for=120, grace=120)


def test_fewer_than_a_quorum_is_never_ready():
    assert not declare_ready(alive=1, workers=3, quorum_for=10_000, grace=0)
    assert not declare_ready(alive=0, workers=1, quorum_for=10_000, grace=0)


def test_one_lost_worker_of_two_leaves_a_quorum():
    assert declare_ready(alive=1, workers=2, quorum_for=120, grace=120)
