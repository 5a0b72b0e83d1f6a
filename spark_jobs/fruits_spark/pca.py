"""Exact PCA of a column of feature vectors: two distributed passes, eigh on the driver.

1. **Moments** (one pass, ``mapInPandas``): every partition computes, in float64,
   ``n_i``, ``mean_i`` and ``M2_i = (X_i - mean_i)^T (X_i - mean_i)`` and emits them as
   one row of bytes. Partitions are merged with Chan et al.'s formula
   ``M2 = sum M2_i + sum n_i (mean_i - mean)(mean_i - mean)^T``, on the executors in a
   tree when there are many partitions (each M2 is ``n_features^2`` float64: 13 MB for
   1280 features), then on the driver. Centring before multiplying keeps it stable.
2. **Fit** (driver): ``numpy.linalg.eigh`` of the covariance ``M2 / (n - 1)``,
   eigenvalues sorted descending with tiny negatives clipped to 0; explained variance
   ratios are eigenvalue / sum of eigenvalues, as scikit-learn reports them. This is
   scikit-learn's ``svd_solver="covariance_eigh"`` and Spark ML's PCA, without
   materialising the data on one machine.
3. **Project** (one pass, ``mapInPandas``): ``(x - mean) @ components[:k].T`` with the
   mean and components broadcast.

Sign convention: an eigenvector's sign is arbitrary, so every component is flipped to
make its entry of largest absolute value positive (the first such entry on ties). This
is scikit-learn's ``svd_flip(u_based_decision=False)``, so components match
``sklearn.decomposition.PCA`` exactly, not only up to sign.

The pure numpy functions (``partition_moments``, ``merge_pair``,
``merge_moments``, ``fit_from_covariance``, ``choose_k``, ``project_array``) need no Spark.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fruits_spark.jobs import JobError

MOMENTS_SCHEMA = "n long, mean binary, m2 binary"
DEFAULT_FAN_IN = 8  # partitions' moments merged per task before they reach the driver
CUMULATIVE_TOLERANCE = 1e-12  # so that --variance 1.0 is reached despite rounding


@dataclass(frozen=True)
class Moments:
    """Count, mean and centred scatter matrix (``M2``) of a set of rows, in float64."""

    n: int
    mean: np.ndarray  # (n_features,)
    m2: np.ndarray  # (n_features, n_features)

    def to_row(self) -> tuple[int, bytes, bytes]:
        return self.n, self.mean.tobytes(), self.m2.tobytes()

    @classmethod
    def from_row(cls, n: int, mean: bytes, m2: bytes) -> Moments:
        mean_arr = np.frombuffer(mean, dtype=np.float64)
        d = mean_arr.size
        return cls(int(n), mean_arr, np.frombuffer(m2, dtype=np.float64).reshape(d, d))


@dataclass(frozen=True)
class PCAModel:
    """A fitted PCA with every component (``min(n_rows, n_features)`` of them)."""

    n_rows: int
    n_features: int
    mean: np.ndarray  # (n_features,)
    components: np.ndarray  # (n_components, n_features), rows sorted by variance, descending
    explained_variance: np.ndarray  # (n_components,) eigenvalues of the covariance (ddof=1)
    explained_variance_ratio: np.ndarray  # (n_components,) share of the total variance

    @property
    def cumulative_variance(self) -> np.ndarray:
        return np.cumsum(self.explained_variance_ratio)


# --- pure numpy -------------------------------------------------------------------------


def partition_moments(x: np.ndarray) -> Moments:
    """``n``, mean and ``(X - mean)^T (X - mean)`` of the rows of ``x``, in float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {x.shape}")
    n, d = x.shape
    if n == 0:
        return Moments(0, np.zeros(d), np.zeros((d, d)))
    mean = x.mean(axis=0)
    centred = x - mean
    return Moments(n, mean, centred.T @ centred)


def merge_pair(a: Moments, b: Moments) -> Moments:
    """Chan et al.: ``M2 = M2_a + M2_b + (n_a n_b / n) (mean_b - mean_a)(mean_b - mean_a)^T``."""
    if b.n == 0:
        return a
    if a.n == 0:
        return b
    n = a.n + b.n
    delta = b.mean - a.mean
    m2 = a.m2 + b.m2
    m2 += np.outer(delta, delta) * (a.n * b.n / n)
    return Moments(n, a.mean + delta * (b.n / n), m2)


def merge_moments(parts: Iterable[Moments]) -> Moments | None:
    """All parts merged pairwise, one at a time (memory: two ``M2``); None if no rows."""
    total: Moments | None = None
    for part in parts:
        if part.n:
            total = part if total is None else merge_pair(total, part)
    return total


def _flip_signs(components: np.ndarray) -> np.ndarray:
    """Make the largest-|value| entry of every row positive (scikit-learn's svd_flip)."""
    rows = np.arange(components.shape[0])
    signs = np.sign(components[rows, np.argmax(np.abs(components), axis=1)])
    signs[signs == 0] = 1.0
    return components * signs[:, np.newaxis]


def fit_from_covariance(moments: Moments) -> PCAModel:
    """Eigendecomposition of ``M2 / (n - 1)``: components sorted by variance, signs fixed."""
    n, d = moments.n, moments.mean.size
    if n < 2:
        raise JobError(f"need at least 2 rows to fit a PCA, got {n}")
    covariance = moments.m2 / (n - 1)
    covariance = (covariance + covariance.T) / 2  # exact symmetry for eigh
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]  # descending (eigh returns ascending)
    n_components = min(n, d)
    order = order[:n_components]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    total = eigenvalues.sum()
    if not total > 0:
        raise JobError("all feature vectors are identical (zero variance): nothing to reduce")
    return PCAModel(
        n_rows=n,
        n_features=d,
        mean=moments.mean,
        components=_flip_signs(eigenvectors[:, order].T),
        explained_variance=eigenvalues,
        explained_variance_ratio=eigenvalues / total,
    )


def choose_k(ratios: np.ndarray, variance: float | None = None, k: int | None = None) -> int:
    """``k`` itself (checked against the number of components), or the smallest ``k`` whose
    cumulative explained variance reaches ``variance`` (``>=``, up to rounding)."""
    ratios = np.asarray(ratios, dtype=np.float64)
    n_components = ratios.size
    if k is not None and variance is not None:
        raise JobError("--k and --variance are mutually exclusive")
    if k is not None:
        if not 1 <= k <= n_components:
            raise JobError(
                f"--k must be between 1 and min(n_rows, n_features) = {n_components}, got {k}"
            )
        return int(k)
    if variance is None:
        raise JobError("one of --k or --variance is required")
    if not 0 < variance <= 1:
        raise JobError(f"--variance must be in (0, 1], got {variance}")
    cumulative = np.cumsum(ratios)
    reached = np.nonzero(cumulative >= variance - CUMULATIVE_TOLERANCE)[0]
    return int(reached[0]) + 1 if reached.size else n_components


def project_array(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """``(x - mean) @ components.T`` in float64."""
    return (np.asarray(x, dtype=np.float64) - mean) @ components.T


# --- Spark ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureStats:
    n_rows: int
    n_features: int


def check_features(df: DataFrame, column: str = "features") -> FeatureStats:
    """One aggregate over the column: rows, nulls, lengths, null/NaN/infinite elements."""
    if column not in df.columns:
        raise JobError(f"no column {column!r} (columns: {', '.join(df.columns)})")
    dtype = df.schema[column].dataType
    if not (
        isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, T.FloatType | T.DoubleType)
    ):
        raise JobError(f"column {column!r} must be array<float>, got {dtype.simpleString()}")
    col = F.col(column)
    bad_value = F.exists(col, lambda v: v.isNull() | F.isnan(v) | (F.abs(v) == math.inf))
    stats = df.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.when(col.isNull(), 1).otherwise(0)).alias("nulls"),
        F.min(F.when(col.isNotNull(), F.size(col))).alias("min_len"),
        F.max(F.when(col.isNotNull(), F.size(col))).alias("max_len"),
        F.sum(F.when(bad_value, 1).otherwise(0)).alias("bad"),
    ).first()
    n = stats["n"]
    if n == 0:
        raise JobError("no rows to reduce")
    if stats["nulls"]:
        raise JobError(f"{stats['nulls']} of {n} rows have null {column}")
    if stats["min_len"] != stats["max_len"]:
        raise JobError(
            f"{column} have different lengths (from {stats['min_len']} to "
            f"{stats['max_len']}); every row must have the same length"
        )
    if stats["min_len"] == 0:
        raise JobError(f"{column} are empty (length 0)")
    if stats["bad"]:
        raise JobError(f"{stats['bad']} of {n} rows have null, NaN or infinite values in {column}")
    return FeatureStats(n_rows=n, n_features=stats["min_len"])


def _matrix(series: pd.Series) -> np.ndarray:
    return np.stack(series.to_numpy()).astype(np.float64, copy=False)


def _emit(total: Moments | None) -> Iterator[pd.DataFrame]:
    if total is not None:
        yield pd.DataFrame([total.to_row()], columns=["n", "mean", "m2"])


def _moments_of_batches(column: str):
    def moments(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from _emit(
            merge_moments(partition_moments(_matrix(b[column])) for b in batches if len(b))
        )

    return moments


def _merge_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    yield from _emit(
        merge_moments(
            Moments.from_row(n, mean, m2)
            for b in batches
            for n, mean, m2 in zip(b["n"], b["mean"], b["m2"], strict=True)
        )
    )


def moments_of(df: DataFrame, column: str = "features", fan_in: int = DEFAULT_FAN_IN) -> Moments:
    """Merged moments of the column: per partition, then in a tree of ``fan_in``-way merges
    on the executors, then the last ``fan_in`` (at most) on the driver."""
    parts = df.select(column).mapInPandas(_moments_of_batches(column), MOMENTS_SCHEMA)
    n_parts = df.rdd.getNumPartitions()
    while n_parts > fan_in:
        n_parts = math.ceil(n_parts / fan_in)
        parts = parts.repartition(n_parts).mapInPandas(_merge_batches, MOMENTS_SCHEMA)
    total = merge_moments(Moments.from_row(r["n"], r["mean"], r["m2"]) for r in parts.collect())
    if total is None:
        raise JobError("no rows to reduce")
    return total


def fit_pca(df: DataFrame, column: str = "features", fan_in: int = DEFAULT_FAN_IN) -> PCAModel:
    """Validate the column (JobError if unusable), then fit a PCA on its mean-centred rows."""
    stats = check_features(df, column)
    moments = moments_of(df, column, fan_in)
    if moments.n != stats.n_rows or moments.mean.size != stats.n_features:  # pragma: no cover
        raise RuntimeError(f"moments of {moments.n} rows, expected {stats.n_rows}")
    return fit_from_covariance(moments)


def project(
    df: DataFrame,
    model: PCAModel,
    k: int,
    column: str = "features",
    output: str = "pca",
    metadata: dict | None = None,
) -> DataFrame:
    """Replace ``column`` with ``output`` = ``(x - mean) @ components[:k].T`` (array<float>),
    keeping the other columns."""
    if not 1 <= k <= model.components.shape[0]:
        raise JobError(f"--k must be between 1 and {model.components.shape[0]}, got {k}")
    sc = df.sparkSession.sparkContext
    params = sc.broadcast((model.mean, np.ascontiguousarray(model.components[:k])))
    kept = [f for f in df.schema.fields if f.name != column]
    schema = T.StructType([*kept, T.StructField(output, T.ArrayType(T.FloatType()))])
    kept_names = [f.name for f in kept]

    def projected(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        mean, components = params.value
        for b in batches:
            if not len(b):
                continue
            y = project_array(_matrix(b[column]), mean, components).astype(np.float32)
            out = b[kept_names].copy()
            out[output] = list(y)
            yield out

    result = df.mapInPandas(projected, schema)
    if metadata is not None:
        result = result.withColumn(output, F.col(output).alias(output, metadata=metadata))
    return result
