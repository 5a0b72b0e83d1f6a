"""A column of feature vectors summed up in one pass: validation counts, rows per label,
and the moments the PCA is fitted from, for any share of the rows.

Every partition summarizes its rows as one :class:`FeatureSummary`, carried between
Spark stages as one row of :data:`ROW_SCHEMA`; summaries merge in any order (sums,
extremes and Chan et al.'s merge of moments), so the PCA pass can validate the input as
it goes and the input is read twice in all (summary, projection), not three times.
Nothing here needs Spark.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fruits_spark.io.arrow_vectors import as_array, vectors_to_matrix
from fruits_spark.jobs import JobError
from fruits_spark.pca.linalg import (
    Moments,
    PCAModel,
    fit_from_covariance,
    merge_pair,
    partition_moments,
)

# One FeatureSummary as one row: what a task emits and the next stage reads.
ROW_SCHEMA = pa.schema(
    [
        ("n", pa.int64()),
        ("nulls", pa.int64()),
        ("min_len", pa.int32()),
        ("max_len", pa.int32()),
        ("bad", pa.int64()),
        ("counts", pa.string()),  # JSON: [[label, rows], ...]
        ("m_n", pa.int64()),
        ("mean", pa.binary()),  # float64 buffer
        ("m2", pa.binary()),  # float64 buffer, n_features^2 values
    ]
)


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
    column = as_array(column)
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
class FeatureSummary:
    """Some rows of a column of vectors: their validation stats, rows per group (label),
    and their moments (None when no rows, or when some rows cannot enter them)."""

    stats: ColumnStats = field(default_factory=ColumnStats)
    counts: dict = field(default_factory=dict)  # group value (None for null) -> rows
    moments: Moments | None = None

    def merge(self, other: FeatureSummary) -> FeatureSummary:
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
        return FeatureSummary(stats, dict(counts), moments)

    def to_row(self) -> dict:
        """This summary as a row of ROW_SCHEMA."""
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

    def to_batch(self) -> pa.RecordBatch:
        """This summary as a one-row Arrow batch of ROW_SCHEMA."""
        return pa.RecordBatch.from_pylist([self.to_row()], schema=ROW_SCHEMA)

    @classmethod
    def from_row(cls, row: dict) -> FeatureSummary:
        """The summary a row of ROW_SCHEMA (as a dict) holds."""
        stats = ColumnStats(row["n"], row["nulls"], row["min_len"], row["max_len"], row["bad"])
        counts = {key: value for key, value in json.loads(row["counts"])}
        moments = None
        if row["mean"] is not None:
            moments = Moments.from_bytes(row["m_n"], row["mean"], row["m2"])
        return cls(stats, counts, moments)


def summarize_batch(
    batch: pa.RecordBatch, column: str, count_by: str | None = None
) -> FeatureSummary:
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
    return FeatureSummary(stats, counts, moments)


def fit_summary(summary: FeatureSummary, column: str = "features") -> PCAModel:
    """Check the summary's stats (JobError if the column is unusable), then fit."""
    summary.stats.check(column)
    moments = summary.moments
    if moments is None or moments.n != summary.stats.n:  # pragma: no cover
        raise RuntimeError(f"no moments for {summary.stats.n} usable rows")
    return fit_from_covariance(moments)
