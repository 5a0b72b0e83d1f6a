"""Exact PCA of a column of feature vectors: two distributed passes, eigh on the driver.

1. **Summary** (``summarize``, one ``mapInArrow`` pass): every partition validates its
   vectors and counts rows per label as it computes, in float64, ``n_i``, ``mean_i`` and
   ``M2_i = (X_i - mean_i)^T (X_i - mean_i)`` (``fruits_spark.pca.summary``), and
   emits all of that as one row. The rows are merged on the executors in a tree down to
   one (each M2 is ``n_features^2`` float64: 13 MB for 1280 features), which the
   driver reads.
2. **Fit** (driver): ``fit_summary``, the eigendecomposition of ``M2 / (n - 1)``
   (``fruits_spark.pca.linalg``).
3. **Project** (``project``, one ``mapInArrow`` pass): ``(x - mean) @ components[:k].T``
   with the mean and components broadcast, written back as an Arrow list column.

A small local input -- a day's batch: 1,000 images are 4 MB of features -- is cheaper in
the driver than in Spark tasks, whose jobs and Python workers cost seconds each for
milliseconds of arithmetic. Up to ``DRIVER_ROWS`` rows and ``DRIVER_BYTES`` of row
groups, ``driver_rows`` reads every row with pyarrow, and ``summarize_rows`` and
``project_rows`` do the same two passes on them with the same functions.

With ``FRUITS_REDUCE_PROFILE=<folder>`` in the workers' environment, both passes write
per-task timings there (``fruits_spark.profiling``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema

from fruits_spark import profiling
from fruits_spark.io.arrow_vectors import matrix_to_vectors, vectors_to_matrix
from fruits_spark.io.local_parquet import LocalParquet, read_pieces
from fruits_spark.jobs import JobError
from fruits_spark.pca.linalg import PCAModel, project_array
from fruits_spark.pca.summary import ROW_SCHEMA, FeatureSummary, fit_summary, summarize_batch

PROFILE_ENV = "FRUITS_REDUCE_PROFILE"  # a folder: per-task timings (fruits_spark.profiling)
DEFAULT_FAN_IN = 8  # partitions' moments merged per task, until one reaches the driver
# A local input up to both sizes is reduced by the driver itself (see the module doc):
# 20,000 rows is every row the report's scatter plot draws; 64 MB of row groups is a
# float64 copy of 128 MB at most.
DRIVER_ROWS = 20_000
DRIVER_BYTES = 64 * 1024 * 1024
SUMMARY_SCHEMA = from_arrow_schema(ROW_SCHEMA)  # the summary rows, as Spark types them


def _check_column_type(df: DataFrame, column: str) -> None:
    if column not in df.columns:
        raise JobError(f"no column {column!r} (columns: {', '.join(df.columns)})")
    dtype = df.schema[column].dataType
    if not (
        isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, T.FloatType | T.DoubleType)
    ):
        raise JobError(f"column {column!r} must be array<float>, got {dtype.simpleString()}")


def _emit(total: FeatureSummary | None) -> Iterator[pa.RecordBatch]:
    if total is not None and total.stats.n:
        yield total.to_batch()


def _merge_all(parts: Iterable[FeatureSummary]) -> FeatureSummary | None:
    total: FeatureSummary | None = None
    for part in parts:
        total = part if total is None else total.merge(part)
    return total


def _summarize_batches(
    column: str, count_by: str | None
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def summarize(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        times = profiling.TaskTimes(PROFILE_ENV, "summary")

        def parts() -> Iterator[FeatureSummary]:
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
    rows = (row for b in batches for row in b.to_pylist())
    yield from _emit(_merge_all(FeatureSummary.from_row(row) for row in rows))


def summary_rows(
    df: DataFrame,
    column: str = "features",
    count_by: str | None = None,
    fan_in: int = DEFAULT_FAN_IN,
    local: LocalParquet | None = None,
) -> DataFrame:
    """The pass over ``column`` (and ``count_by``) as a DataFrame of one partition and at
    most one row: a summary per partition, merged ``fan_in`` at a time on the executors
    until one is left. The driver then holds one ``n_features^2`` summary, whatever the
    partitions: collecting the last eight (8 MB each for 1024 features) grew the driver
    JVM's heap from 390 to 490 MB at 90k images. With ``local`` (``df``'s own files), the
    tasks read them with pyarrow instead of through Spark."""
    _check_column_type(df, column)
    cols = [column] if count_by is None else [column, count_by]
    fn = _summarize_batches(column, count_by)
    if local is None:
        parts = df.select(*cols).mapInArrow(fn, SUMMARY_SCHEMA)
        n_parts = df.rdd.getNumPartitions()
    else:
        parts = local.map_in_arrow(cols, fn, SUMMARY_SCHEMA)
        n_parts = local.n_tasks
    while n_parts > 1:
        n_parts = math.ceil(n_parts / fan_in)
        parts = parts.repartition(n_parts).mapInArrow(_merge_batches, SUMMARY_SCHEMA)
    return parts


def summarize(
    df: DataFrame,
    column: str = "features",
    count_by: str | None = None,
    fan_in: int = DEFAULT_FAN_IN,
    local: LocalParquet | None = None,
) -> FeatureSummary:
    """:func:`summary_rows`' one row, read by the driver. Never None: an empty input gives
    an empty FeatureSummary."""
    rows = summary_rows(df, column, count_by, fan_in, local).collect()
    total = _merge_all(FeatureSummary.from_row(r.asDict()) for r in rows)
    return total or FeatureSummary()


def driver_rows(local: LocalParquet | None, columns: Sequence[str]) -> pa.Table | None:
    """Every row of ``columns`` of a local input (``local``: its files) read by the driver,
    in file order, when it holds at most ``DRIVER_ROWS`` rows and ``DRIVER_BYTES`` of row
    groups; None otherwise (a remote or large input stays in Spark's tasks)."""
    if local is None:
        return None
    pieces = sorted((p for task in local.tasks for p in task), key=lambda p: (p.path, p.row_group))
    if sum(p.rows for p in pieces) > DRIVER_ROWS or sum(p.bytes for p in pieces) > DRIVER_BYTES:
        return None
    batches = list(read_pieces(pieces, columns))
    return pa.Table.from_batches(batches) if batches else None  # no rows: Spark's way


def summarize_rows(
    df: DataFrame, table: pa.Table, column: str = "features", count_by: str | None = None
) -> FeatureSummary:
    """What :func:`summarize` gives for ``df``'s rows, which the driver holds (``table``):
    the column's type checked, then one summary of all of them (no Spark job)."""
    _check_column_type(df, column)
    if not table.num_rows:
        return FeatureSummary()
    return summarize_batch(table.combine_chunks().to_batches()[0], column, count_by)


def project_rows(
    table: pa.Table, model: PCAModel, k: int, column: str = "features", output: str = "pca"
) -> pa.Table:
    """What :func:`project` gives for rows the driver holds (``output`` as float32 lists,
    as written), in their order."""
    _check_k(model, k)
    kept = [name for name in table.column_names if name != column]
    components = np.ascontiguousarray(model.components[:k])
    y = project_array(vectors_to_matrix(table.column(column)), model.mean, components)
    return pa.table([*(table.column(name) for name in kept), matrix_to_vectors(y)],
                    names=[*kept, output])  # fmt: skip


def _check_k(model: PCAModel, k: int) -> None:
    if not 1 <= k <= model.components.shape[0]:
        raise JobError(f"--k must be between 1 and {model.components.shape[0]}, got {k}")


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
    _check_k(model, k)
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
