"""What the jobs' tests share: where the jobs live, the environment they run in, labels
and features to feed them, and the features' contract as one assertion."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fruits.clusters.local.sparkenv import spark_env

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "spark_jobs"
BIN = Path(sys.executable).parent


def spark_submit_env() -> dict[str, str]:
    """The venv's spark-submit and Python on loopback; job code only via --py-files."""
    return spark_env()


LABELS = ["Apple Braeburn", "Banana", "Kiwi", "Pitahaya Red", "Äpfel"]  # as on disk


def low_rank_features(n: int, d: int, rank: int, seed: int) -> np.ndarray:
    """Rows with a known low-rank structure plus noise, as float32 (what featurize writes)."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(20, 2, rank)[:, None]
    signal = rng.normal(size=(n, rank)) @ (scales * rng.normal(size=(rank, d)))
    return (signal + 0.3 * rng.normal(size=(n, d)) + 5.0).astype(np.float32)


def assert_same_features(actual: np.ndarray, expected: np.ndarray) -> None:
    """allclose(rtol=1e-4, atol=1e-4), with atol relative to the features' scale.

    Seeded random weights give MobileNetV2 features of ~1e-11: an absolute 1e-4 would
    accept any vector at all, zeros included. Scaling atol keeps the check meaningful.
    """
    scale = float(np.abs(expected).max())
    assert scale > 0, "expected features are all zero: the comparison would be vacuous"
    assert not np.allclose(expected[0], expected[1:], rtol=1e-3, atol=1e-4 * scale), (
        "different images gave the same features"
    )
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale)
