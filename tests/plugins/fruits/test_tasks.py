"""The DAG's task bodies that need no cluster (fruits.tasks)."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from fruits import tasks
from fruits.dev.sample_batch import write_batch


def test_a_one_image_batch_fails_at_find_batch_saying_what_to_do(tmp_path):
    """Before any upload or cluster: reduce would fail on it after a whole featurize."""
    (one,) = write_batch(tmp_path / "2026-01-01", per_label=1, labels=["Apple"])
    with pytest.raises(AirflowFailException, match="holds 1 image; the PCA needs at least 2"):
        tasks.find_batch("2026-01-01", str(tmp_path))
    one.with_name("second.jpg").write_bytes(one.read_bytes())
    assert tasks.find_batch("2026-01-01", str(tmp_path)) == 2
    assert tasks.find_batch("2026-01-02", str(tmp_path)) == 0  # missing: skipped, not failed
