"""Exact PCA of a column of feature vectors: two distributed passes, eigh on the driver.

1. **Summary** (one pass, ``mapInArrow``): every partition validates its vectors (nulls,
   lengths, null/NaN/infinite elements), counts rows per label, and computes, in float64,
   ``n_i``, ``mean_i`` and ``M2_i = (X_i - mean_i)^T (X_i - mean_i)``; it emits all of
   that as one row. Partitions are merged with Chan et al.'s formula
   ``M2 = sum M2_i + sum n_i (mean_i - mean)(mean_i - mean)^T``, on the executors in a
   tree when there are many partitions (each M2 is ``n_features^2`` float64: 13 MB for
   1280 features), then on the driver. Centring before multiplying keeps it stable.
   Validation rides along in the same pass, so the input is read twice in all, not three
   times. Arrow's ``list<float>`` column is read as one flat buffer reshaped to
   ``(rows, n_features)`` (``vectors_to_matrix``), never as one Python object per row.
2. **Fit** (driver): ``numpy.linalg.eigh`` of the covariance ``M2 / (n - 1)``,
   eigenvalues sorted descending with tiny negatives clipped to 0; explained variance
   ratios are eigenvalue / sum of eigenvalues, as scikit-learn reports them. This is
   scikit-learn's ``svd_solver="covariance_eigh"`` and Spark ML's PCA, without
   materialising the data on one machine.
3. **Project** (one pass, ``mapInArrow``): ``(x - mean) @ components[:k].T`` with the
   mean and components broadcast, written back as an Arrow list column.

Sign convention: an eigenvector's sign is arbitrary, so every component is flipped to
make its entry of largest absolute value positive (the first such entry on ties). This
is scikit-learn's ``svd_flip(u_based_decision=False)``, so components match
``sklearn.decomposition.PCA`` exactly, not only up to sign.

The pure functions (``partition_moments``, ``merge_pair``, ``merge_moments``,
``fit_from_covariance``, ``choose_k``, ``project_array``, ``vectors_to_matrix``,
``matrix_to_vectors``, ``vector_stats``, ``Summary.merge``) need no Spark.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fruits_spark import limits, profiling
from fruits_spark.jobs import JobError
from fruits_spark.localparquet import LocalParquet

SUMMARY_SCHEMA = (
    "n long, nulls long, min_len int, max_len int, bad long, counts string, "
    "m_n long, mean binary, m2 binary"
)
PROFILE_ENV = "FRUITS_REDUCE_PROFILE"  # a folder: per-task timings (fruits_spark.profiling)
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
    error = limits.variance_error(variance)
    if error:
        raise JobError(f"--variance {error}")
    cumulative = np.cumsum(ratios)
    reached = np.nonzero(cumulative >= variance - CUMULATIVE_TOLERANCE)[0]
    return int(reached[0]) + 1 if reached.size else n_components


def project_array(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """``(x - mean) @ components.T`` in float64."""
    return (np.asarray(x, dtype=np.float64) - mean) @ components.T


# --- Arrow columns of vectors (pure: pyarrow and numpy) ----------------------------------


def _as_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def vectors_to_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The ``(rows, d)`` matrix of a ``list<float|double>`` column whose rows are all
    non-null and of one length ``d``: Arrow's flat value buffer reshaped (no copy for
    float32 without nulls), instead of the numpy array per row that pandas makes and
    ``np.stack`` copies again. Null elements come out as NaN. ValueError if rows are
    null or of different lengths."""
    column = _as_array(column)
    if column.null_count:
        raise ValueError(f"{column.null_count} null rows")
    n = len(column)
    offsets = np.asarray(column.offsets)  # n + 1 of them, this slice's own
    lengths = np.diff(offsets)
    d = int(lengths[0]) if n else 0
    if n and (lengths != d).any():
        raise ValueError(f"rows of different lengths ({lengths.min()} to {lengths.max()})")
    values = column.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    return values.to_numpy(zero_copy_only=False).reshape(n, d)


def matrix_to_vectors(x: np.ndarray) -> pa.ListArray:
    """The rows of a 2-D float32 array as a ``list<float>`` column (the inverse of
    ``vectors_to_matrix``), built from one buffer and its offsets."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {x.shape}")
    n, d = x.shape
    if n * d >= 2**31:
        raise ValueError(f"{n} x {d} values do not fit int32 list offsets")
    offsets = pa.array((np.arange(n + 1, dtype=np.int64) * d).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)))


@dataclass(frozen=True)
class ColumnStats:
    """What validation needs to know of a column of vectors; sums and extremes, so
    partitions merge in any order."""

    n: int = 0  # rows
    nulls: int = 0  # null rows
    min_len: int | None = None  # of non-null rows
    max_len: int | None = None
    bad: int = 0  # non-null rows with a null, NaN or infinite element

    def merge(self, other: ColumnStats) -> ColumnStats:
        def pick(f, a, b):
            return b if a is None else a if b is None else f(a, b)

        return ColumnStats(
            self.n + other.n,
            self.nulls + other.nulls,
            pick(min, self.min_len, other.min_len),
            pick(max, self.max_len, other.max_len),
            self.bad + other.bad,
        )

    @property
    def usable(self) -> bool:
        """Every row non-null, finite and of one length: moments can be computed."""
        return not self.nulls and not self.bad and self.min_len == self.max_len

    def check(self, column: str = "features") -> None:
        """JobError naming the first problem found, in the order a user would fix them."""
        n = self.n
        if n == 0:
            raise JobError("no rows to reduce")
        if self.nulls:
            raise JobError(f"{self.nulls} of {n} rows have null {column}")
        if self.min_len != self.max_len:
            raise JobError(
                f"{column} have different lengths (from {self.min_len} to "
                f"{self.max_len}); every row must have the same length"
            )
        if self.min_len == 0:
            raise JobError(f"{column} are empty (length 0)")
        if self.bad:
            raise JobError(f"{self.bad} of {n} rows have null, NaN or infinite values in {column}")


def vector_stats(column: pa.Array | pa.ChunkedArray) -> ColumnStats:
    """Rows, null rows, shortest and longest non-null row, and rows holding a null, NaN
    or infinite element, of a ``list<float|double>`` column."""
    column = _as_array(column)
    n, nulls = len(column), column.null_count
    lengths = pc.list_value_length(column).drop_null()
    if not len(lengths):
        return ColumnStats(n, nulls)
    extremes = pc.min_max(lengths)
    min_len, max_len = extremes["min"].as_py(), extremes["max"].as_py()
    if not nulls and min_len == max_len:  # the usual case: one matrix
        x = vectors_to_matrix(column)
        bad = int(n - np.isfinite(x).all(axis=1).sum()) if x.size else 0
    else:
        values = column.flatten().to_numpy(zero_copy_only=False)  # null elements: NaN
        rows = np.asarray(pc.list_parent_indices(column))
        bad = int(np.unique(rows[~np.isfinite(values)]).size)
    return ColumnStats(n, nulls, min_len, max_len, bad)


@dataclass(frozen=True)
class Summary:
    """One pass's worth of a column: its validation stats, rows per group (label), and
    its moments (None when no rows, or when some rows cannot enter them)."""

    stats: ColumnStats = field(default_factory=ColumnStats)
    counts: dict = field(default_factory=dict)  # group value (None for null) -> rows
    moments: Moments | None = None

    def merge(self, other: Summary) -> Summary:
        stats = self.stats.merge(other.stats)
        counts = Counter(self.counts)
        counts.update(other.counts)
        moments = None
        a, b = self.moments, other.moments
        if stats.usable and stats.n:
            if self.stats.n and other.stats.n and a is not None and b is not None:
                moments = merge_pair(a, b)
            elif not other.stats.n:
                moments = a
            elif not self.stats.n:
                moments = b
        return Summary(stats, dict(counts), moments)

    def to_row(self) -> dict:
        s, m = self.stats, self.moments
        return {
            "n": s.n,
            "nulls": s.nulls,
            "min_len": s.min_len,
            "max_len": s.max_len,
            "bad": s.bad,
            "counts": json.dumps(list(self.counts.items())),
            "m_n": None if m is None else m.n,
            "mean": None if m is None else m.mean.tobytes(),
            "m2": None if m is None else m.m2.tobytes(),
        }

    @classmethod
    def from_row(cls, row: dict) -> Summary:
        stats = ColumnStats(row["n"], row["nulls"], row["min_len"], row["max_len"], row["bad"])
        counts = {key: value for key, value in json.loads(row["counts"])}
        moments = None
        if row["mean"] is not None:
            moments = Moments.from_row(row["m_n"], row["mean"], row["m2"])
        return cls(stats, counts, moments)


def summarize_batch(batch: pa.RecordBatch, column: str, count_by: str | None = None) -> Summary:
    """Stats, group counts and (if the rows are usable) moments of one Arrow batch."""
    vectors = batch.column(column)
    stats = vector_stats(vectors)
    counts: dict = {}
    if count_by is not None:
        tally = pc.value_counts(batch.column(count_by))
        counts = dict(
            zip(tally.field("values").to_pylist(), tally.field("counts").to_pylist(), strict=True)
        )
    moments = partition_moments(vectors_to_matrix(vectors)) if stats.usable and stats.n else None
    return Summary(stats, counts, moments)


# --- Spark ------------------------------------------------------------------------------


def _check_column_type(df: DataFrame, column: str) -> None:
    if column not in df.columns:
        raise JobError(f"no column {column!r} (columns: {', '.join(df.columns)})")
    dtype = df.schema[column].dataType
    if not (
        isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, T.FloatType | T.DoubleType)
    ):
        raise JobError(f"column {column!r} must be array<float>, got {dtype.simpleString()}")


_SUMMARY_ARROW = pa.schema(
    [
        ("n", pa.int64()),
        ("nulls", pa.int64()),
        ("min_len", pa.int32()),
        ("max_len", pa.int32()),
        ("bad", pa.int64()),
        ("counts", pa.string()),
        ("m_n", pa.int64()),
        ("mean", pa.binary()),
        ("m2", pa.binary()),
    ]
)


def _emit(total: Summary | None) -> Iterator[pa.RecordBatch]:
    if total is not None and total.stats.n:
        row = total.to_row()
        yield pa.RecordBatch.from_pylist([row], schema=_SUMMARY_ARROW)


def _merge_all(parts: Iterable[Summary]) -> Summary | None:
    total: Summary | None = None
    for part in parts:
        total = part if total is None else total.merge(part)
    return total


def _summarize_batches(
    column: str, count_by: str | None
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def summarize(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        times = profiling.TaskTimes(PROFILE_ENV, "summary")

        def parts() -> Iterator[Summary]:
            for b in times.batches(batches):
                if b.num_rows:
                    # Spans the yield: _merge_all's merge of this part counts as computing.
                    with times.computing():
                        yield summarize_batch(b, column, count_by)

        total = _merge_all(parts())
        times.done()
        yield from _emit(total)

    return summarize


def _merge_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield from _emit(_merge_all(Summary.from_row(r) for b in batches for r in b.to_pylist()))


def summarize(
    df: DataFrame,
    column: str = "features",
    count_by: str | None = None,
    fan_in: int = DEFAULT_FAN_IN,
    local: LocalParquet | None = None,
) -> Summary:
    """One pass over ``column`` (and ``count_by``): per partition, then in a tree of
    ``fan_in``-way merges on the executors, then the last ``fan_in`` (at most) on the
    driver. With ``local`` (``df``'s own files), the tasks read them with pyarrow instead
    of through Spark. Never None: an empty input gives an empty Summary."""
    _check_column_type(df, column)
    cols = [column] if count_by is None else [column, count_by]
    fn = _summarize_batches(column, count_by)
    if local is None:
        parts = df.select(*cols).mapInArrow(fn, SUMMARY_SCHEMA)
        n_parts = df.rdd.getNumPartitions()
    else:
        parts = local.map_in_arrow(cols, fn, SUMMARY_SCHEMA)
        n_parts = local.n_tasks
    while n_parts > fan_in:
        n_parts = math.ceil(n_parts / fan_in)
        parts = parts.repartition(n_parts).mapInArrow(_merge_batches, SUMMARY_SCHEMA)
    total = _merge_all(Summary.from_row(r.asDict()) for r in parts.collect())
    return total or Summary()


def fit_summary(summary: Summary, column: str = "features") -> PCAModel:
    """Check the summary's stats (JobError if the column is unusable), then fit."""
    summary.stats.check(column)
    moments = summary.moments
    if moments is None or moments.n != summary.stats.n:  # pragma: no cover
        raise RuntimeError(f"no moments for {summary.stats.n} usable rows")
    return fit_from_covariance(moments)


def fit_pca(df: DataFrame, column: str = "features", fan_in: int = DEFAULT_FAN_IN) -> PCAModel:
    """Validate the column (JobError if unusable) and fit a PCA on its mean-centred rows,
    in one pass over the data."""
    return fit_summary(summarize(df, column, fan_in=fan_in), column)


def project(
    df: DataFrame,
    model: PCAModel,
    k: int,
    column: str = "features",
    output: str = "pca",
    metadata: dict | None = None,
    local: LocalParquet | None = None,
) -> DataFrame:
    """Replace ``column`` with ``output`` = ``(x - mean) @ components[:k].T`` (array<float>),
    keeping the other columns. With ``local`` (``df``'s own files), the tasks read them
    with pyarrow instead of through Spark."""
    if not 1 <= k <= model.components.shape[0]:
        raise JobError(f"--k must be between 1 and {model.components.shape[0]}, got {k}")
    sc = df.sparkSession.sparkContext
    params = sc.broadcast((model.mean, np.ascontiguousarray(model.components[:k])))
    kept = [f for f in df.schema.fields if f.name != column]
    schema = T.StructType([*kept, T.StructField(output, T.ArrayType(T.FloatType()))])
    kept_names = [f.name for f in kept]

    def projected(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        times = profiling.TaskTimes(PROFILE_ENV, "project")
        mean, components = params.value
        for b in times.batches(batches):
            if not b.num_rows:
                continue
            with times.computing():
                y = project_array(vectors_to_matrix(b.column(column)), mean, components)
                out = pa.RecordBatch.from_arrays(
                    [*(b.column(name) for name in kept_names), matrix_to_vectors(y)],
                    names=[*kept_names, output],
                )
            yield out
        times.done()

    if local is None:
        result = df.mapInArrow(projected, schema)
    else:
        result = local.map_in_arrow([*kept_names, column], projected, schema)
    if metadata is not None:
        result = result.withColumn(output, F.col(output).alias(output, metadata=metadata))
    return result
