"""The PCA's numpy core, Arrow columns and feature summaries, without Spark: checked
against numpy and scikit-learn."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.decomposition import PCA

from fruits_spark.io.arrow_vectors import matrix_to_vectors, vectors_to_matrix
from fruits_spark.jobs import JobError
from fruits_spark.pca.linalg import (
    Moments,
    choose_k,
    fit_from_covariance,
    merge_moments,
    merge_pair,
    partition_moments,
    project_array,
)
from fruits_spark.pca.summary import (
    ColumnStats,
    FeatureSummary,
    fit_summary,
    summarize_batch,
    vector_stats,
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


# --- Arrow columns of vectors ------------------------------------------------------------


def list_column(rows: list, value_type: pa.DataType | None = None) -> pa.Array:
    return pa.array(rows, type=pa.list_(value_type or pa.float32()))


def test_vectors_to_matrix_equals_stacking_the_rows():
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    column = list_column(x.tolist())
    got = vectors_to_matrix(column)
    assert got.dtype == np.float32 and got.shape == (7, 5)
    np.testing.assert_array_equal(got, np.stack([np.asarray(r) for r in column.to_pylist()]))
    # A slice (as Spark's batches may be) starts at its own offset, not at row 0.
    np.testing.assert_array_equal(vectors_to_matrix(column.slice(2, 3)), x[2:5])
    np.testing.assert_array_equal(
        vectors_to_matrix(pa.chunked_array([column.slice(0, 3), column.slice(3)])), x
    )
    doubles = vectors_to_matrix(list_column(x.tolist(), pa.float64()))
    assert doubles.dtype == np.float64
    np.testing.assert_array_equal(doubles, x)
    assert vectors_to_matrix(list_column([])).shape == (0, 0)


def test_vectors_to_matrix_rejects_null_rows_and_ragged_rows_and_shows_null_elements():
    with pytest.raises(ValueError, match="1 null rows"):
        vectors_to_matrix(list_column([[1.0, 2.0], None]))
    with pytest.raises(ValueError, match="different lengths"):
        vectors_to_matrix(list_column([[1.0, 2.0], [1.0, 2.0, 3.0]]))
    got = vectors_to_matrix(list_column([[1.0, None], [3.0, 4.0]]))
    assert np.isnan(got[0, 1]) and got[1, 1] == 4.0


def test_matrix_to_vectors_round_trips():
    y = np.random.default_rng(1).normal(size=(6, 3))
    column = matrix_to_vectors(y)
    assert column.type == pa.list_(pa.float32())
    assert column.to_pylist() == y.astype(np.float32).tolist()
    np.testing.assert_array_equal(vectors_to_matrix(column), y.astype(np.float32))
    assert len(matrix_to_vectors(np.zeros((0, 3)))) == 0


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([[1.0, 2.0], [3.0, 4.0]], ColumnStats(2, 0, 2, 2, 0)),
        ([[1.0, 2.0], None, [0.0, 1.0]], ColumnStats(3, 1, 2, 2, 0)),
        ([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0]], ColumnStats(3, 0, 3, 4, 0)),
        ([[1.0, 2.0], [float("nan"), 1.0], [0.0, 1.0]], ColumnStats(3, 0, 2, 2, 1)),
        ([[1.0, 2.0], [float("inf"), 1.0], [0.0, None]], ColumnStats(3, 0, 2, 2, 2)),
        # ragged and bad at once: counted by row, not by element
        (
            [[float("nan"), float("-inf")], None, [1.0, None, 2.0], [1.0]],
            ColumnStats(4, 1, 1, 3, 2),
        ),
        ([[], []], ColumnStats(2, 0, 0, 0, 0)),
        ([None, None], ColumnStats(2, 2, None, None, 0)),
        ([], ColumnStats()),
    ],
)
def test_vector_stats(rows, expected):
    assert vector_stats(list_column(rows)) == expected
    # A slice counts only its own rows, not the bad, null or longer ones around it.
    padded = list_column([[9.0, float("nan"), 1.0, 1.0, 1.0], *rows, None])
    assert vector_stats(padded.slice(1, len(rows))) == expected


def test_column_stats_check_names_the_first_problem():
    ColumnStats(3, 0, 2, 2, 0).check()
    for stats, message in [
        (ColumnStats(), "no rows to reduce"),
        (ColumnStats(3, 1, 2, 4, 1), "1 of 3 rows have null features"),
        (ColumnStats(3, 0, 2, 4, 1), r"different lengths \(from 2 to 4\)"),
        (ColumnStats(3, 0, 0, 0, 0), r"empty \(length 0\)"),
        (ColumnStats(3, 0, 2, 2, 2), "2 of 3 rows have null, NaN or infinite values in features"),
    ]:
        with pytest.raises(JobError, match=message):
            stats.check()


def batch(x: np.ndarray, labels: list) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [list_column(x.tolist()), pa.array(labels, pa.string())], names=["features", "label"]
    )


def test_summaries_of_batches_merge_to_the_whole_in_any_order():
    x = low_rank(120, 8, rank=3, seed=5, offset=2.0).astype(np.float32)
    labels = [None if i % 17 == 0 else f"fruit {i % 3}" for i in range(120)]
    pieces = [(0, 1), (1, 40), (40, 41), (41, 120)]
    parts = [summarize_batch(batch(x[a:b], labels[a:b]), "features", "label") for a, b in pieces]
    rng = np.random.default_rng(5)
    total = FeatureSummary()
    for i in rng.permutation(len(parts)):
        # through the row Spark carries between stages
        total = FeatureSummary.from_row(total.merge(parts[i]).to_row())

    assert total.stats == ColumnStats(120, 0, 8, 8, 0)
    assert total.counts == {label: labels.count(label) for label in set(labels)}  # None too
    whole = partition_moments(x)
    np.testing.assert_allclose(total.moments.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(total.moments.m2, whole.m2, rtol=1e-9, atol=1e-12)
    model = fit_summary(total)
    np.testing.assert_allclose(
        model.explained_variance_ratio,
        PCA(svd_solver="full").fit(x.astype(np.float64)).explained_variance_ratio_,
        atol=1e-10,
    )


def test_a_summary_with_unusable_rows_has_no_moments_and_fails_the_fit():
    good = summarize_batch(batch(np.ones((3, 2)), ["a"] * 3), "features")
    ragged = summarize_batch(batch(np.ones((2, 4)), ["a"] * 2), "features")  # other length
    bad = summarize_batch(batch(np.full((2, 2), np.inf), ["a"] * 2), "features")
    assert good.moments is not None and good.counts == {}
    assert bad.moments is None
    for other, message in [(ragged, "different lengths"), (bad, "2 of 5 rows have null, NaN")]:
        for merged in (good.merge(other), other.merge(good)):
            assert merged.moments is None
            with pytest.raises(JobError, match=message):
                fit_summary(merged)
    assert good.merge(FeatureSummary()) == good and FeatureSummary().merge(good) == good
