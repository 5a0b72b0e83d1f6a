"""fruits_spark.pca's numpy core, without Spark: checked against numpy and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from fruits_spark.jobs import JobError
from fruits_spark.pca import (
    Moments,
    choose_k,
    fit_from_covariance,
    merge_moments,
    merge_pair,
    partition_moments,
    project_array,
)


def low_rank(n: int, d: int, rank: int, seed: int, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10, 1, rank)[:, None]
    signal = rng.normal(size=(n, rank)) @ (scales * rng.normal(size=(rank, d)))
    return signal + 0.05 * rng.normal(size=(n, d)) + offset


def random_splits(x: np.ndarray, n_parts: int, seed: int) -> list[np.ndarray]:
    """Uneven contiguous pieces, an empty one and a single row included."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(2, len(x) - 1), size=n_parts - 3, replace=False))
    return [x[:0], x[:1], *np.split(x[1:], cuts - 1)]


def fit_by_parts(x: np.ndarray, n_parts: int = 6, seed: int = 0):
    parts = [partition_moments(p) for p in random_splits(x, n_parts, seed)]
    return fit_from_covariance(merge_moments(parts))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merged_moments_of_random_splits_equal_the_whole(seed):
    # An offset of 1e6 with unit-scale spread: the naive X^T X - n mean mean^T loses
    # about 4 significant digits here; the centred merge must not.
    x = low_rank(400, 12, rank=4, seed=seed, offset=1e6)
    parts = [partition_moments(p) for p in random_splits(x, 7, seed)]
    rng = np.random.default_rng(seed)
    merged = merge_moments(parts[i] for i in rng.permutation(len(parts)))

    assert merged.n == 400
    np.testing.assert_allclose(merged.mean, x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(
        merged.m2 / (merged.n - 1), np.cov(x, rowvar=False), rtol=1e-8, atol=1e-9
    )


def test_merge_pair_is_order_independent_and_skips_empty_parts():
    x = low_rank(50, 5, rank=2, seed=3)
    a, b, c = (partition_moments(p) for p in (x[:10], x[10:35], x[35:]))
    empty = partition_moments(x[:0])
    left = merge_pair(merge_pair(a, b), c)
    right = merge_pair(a, merge_pair(empty, merge_pair(c, b)))
    np.testing.assert_allclose(left.m2, right.m2, rtol=1e-12)
    np.testing.assert_allclose(left.m2, np.cov(x, rowvar=False) * 49, rtol=1e-10)
    assert merge_moments([empty, empty]) is None


@pytest.mark.parametrize(
    ("variance", "expected"),
    [
        (0.1, 1),
        (0.5, 1),  # reaching the threshold exactly is enough (>=)
        (0.5000001, 2),
        (0.8, 2),
        (0.81, 3),
        (0.95, 3),
        (0.96, 4),
        (1.0, 4),
    ],
)
def test_choose_k_by_variance(variance, expected):
    assert choose_k(np.array([0.5, 0.3, 0.15, 0.05]), variance=variance) == expected


def test_choose_k_reaches_full_variance_despite_rounding():
    ratios = np.full(10, 0.1)  # cumsum ends at 0.9999999999999999
    assert np.cumsum(ratios)[-1] < 1.0
    assert choose_k(ratios, variance=1.0) == 10


def test_choose_k_explicit():
    ratios = np.array([0.5, 0.3, 0.15, 0.05])
    assert choose_k(ratios, k=1) == 1
    assert choose_k(ratios, k=4) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "--k"),
        ({"k": 5}, "--k must be between 1 and min(n_rows, n_features) = 4"),
        ({"variance": 0.0}, "--variance"),
        ({"variance": 1.5}, "--variance"),
        ({"variance": float("nan")}, "--variance"),
        ({"variance": 0.9, "k": 2}, "mutually exclusive"),
    ],
)
def test_choose_k_rejects(kwargs, message):
    with pytest.raises(JobError, match=message.replace("(", r"\(").replace(")", r"\)")):
        choose_k(np.array([0.5, 0.3, 0.15, 0.05]), **kwargs)


def test_sign_convention_on_a_hand_made_covariance():
    # Eigenvectors (0.6, -0.8) with variance 5 and (0.8, 0.6) with variance 1: the first
    # one's largest-|value| entry (-0.8) is negative, so it must come out flipped.
    v1, v2 = np.array([0.6, -0.8]), np.array([0.8, 0.6])
    covariance = 5 * np.outer(v1, v1) + np.outer(v2, v2)
    n = 11
    model = fit_from_covariance(Moments(n, np.array([1.0, 2.0]), covariance * (n - 1)))
    np.testing.assert_allclose(model.components, [[-0.6, 0.8], [0.8, 0.6]], atol=1e-12)
    np.testing.assert_allclose(model.explained_variance, [5, 1], rtol=1e-12)
    np.testing.assert_allclose(model.explained_variance_ratio, [5 / 6, 1 / 6], rtol=1e-12)


def test_sign_convention_largest_entry_positive_and_independent_of_data_sign():
    x = low_rank(300, 20, rank=6, seed=4)
    model = fit_by_parts(x)
    rows = np.arange(model.components.shape[0])
    largest = model.components[rows, np.argmax(np.abs(model.components), axis=1)]
    assert (largest > 0).all()
    # -X has the same covariance, so the same components; its projections are negated.
    flipped = fit_by_parts(-x, seed=1)
    np.testing.assert_allclose(flipped.components[:6], model.components[:6], atol=1e-9)
    np.testing.assert_allclose(
        project_array(-x, flipped.mean, flipped.components[:6]),
        -project_array(x, model.mean, model.components[:6]),
        atol=1e-8,
    )


@pytest.mark.parametrize(("n", "d"), [(300, 20), (15, 40)])
def test_matches_sklearn_full_svd(n, d):
    x = low_rank(n, d, rank=5, seed=n + d, offset=3.0)
    model = fit_by_parts(x)
    reference = PCA(svd_solver="full").fit(x)

    n_components = min(n, d)
    assert model.components.shape == (n_components, d)
    np.testing.assert_allclose(
        model.explained_variance_ratio, reference.explained_variance_ratio_, atol=1e-10
    )
    np.testing.assert_allclose(
        model.explained_variance, reference.explained_variance_, rtol=1e-8, atol=1e-10
    )
    np.testing.assert_allclose(model.mean, reference.mean_, rtol=1e-12)
    # Same sign convention as scikit-learn: equal, not only up to sign (leading
    # components only: the trailing ones are noise with nearly equal variances).
    np.testing.assert_allclose(model.components[:5], reference.components_[:5], atol=1e-8)
    np.testing.assert_allclose(
        project_array(x, model.mean, model.components[:5]),
        reference.transform(x)[:, :5],
        atol=1e-7,
    )


def test_fit_rejects_a_single_row_and_zero_variance():
    with pytest.raises(JobError, match="at least 2 rows"):
        fit_from_covariance(partition_moments(np.ones((1, 3))))
    with pytest.raises(JobError, match="zero variance"):
        fit_from_covariance(partition_moments(np.ones((5, 3))))
