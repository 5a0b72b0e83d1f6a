"""Local Parquet input read by the Python tasks themselves, with pyarrow.

A ``mapInArrow`` over a Parquet DataFrame gets its rows from the JVM: Spark decodes the
file, then writes every value into an Arrow batch for the Python worker, and a task waits
for all that before it sees its first batch (``make bench``'s reduce profile shows how
long), in both passes of a reduce. When every input file is local
(``file:``), each task can instead read its share of the row groups with pyarrow, straight
into Arrow. Spark still lists the files (its file index, hidden files left out), runs the
tasks and writes the results; any other URI (``s3://`` on EMR, ``hdfs://``) keeps Spark's
own reader, and so does a file whose footer lacks a column the job needs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from fruits_spark.io import fsio

BATCH_ROWS = 10_000  # rows per Arrow batch a task reads (Spark's maxRecordsPerBatch default)
TASK_BYTES = 128 * 1024 * 1024  # a task's share at most, when cores are few (as Spark's
# spark.sql.files.maxPartitionBytes)


@dataclass(frozen=True)
class Piece:
    """One row group of one file: the unit tasks share."""

    path: str
    row_group: int
    rows: int
    bytes: int


def local_path(uri: str) -> str | None:
    """The file system path of a ``file:`` URI (percent-decoded), None for other schemes."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else None


def pieces_of(paths: Sequence[str], columns: Sequence[str]) -> list[Piece] | None:
    """Every row group of the files, from their footers; None if a file lacks a column."""
    pieces = []
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        if not set(columns) <= set(meta.schema.to_arrow_schema().names):
            return None
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            pieces.append(Piece(path, i, group.num_rows, group.total_byte_size))
    return pieces


def plan_tasks(pieces: Sequence[Piece], n_tasks: int) -> list[list[Piece]]:
    """At most ``n_tasks`` groups of pieces with bytes as even as a greedy fill makes them
    (largest piece to the lightest task); pieces keep their order inside a task."""
    n = max(1, min(n_tasks, len(pieces)))
    loads = [0] * n
    owner: dict[int, int] = {}
    for index in sorted(range(len(pieces)), key=lambda i: -pieces[i].bytes):
        task = min(range(n), key=loads.__getitem__)
        owner[index] = task
        loads[task] += pieces[index].bytes
    tasks: list[list[Piece]] = [[] for _ in range(n)]
    for index, piece in enumerate(pieces):
        tasks[owner[index]].append(piece)
    return [t for t in tasks if t]


def read_pieces(pieces: Sequence[Piece], columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """The ``columns`` of every piece, in order, as batches of at most BATCH_ROWS rows;
    a file is opened (its footer read) once for each run of its row groups."""
    for path, run in itertools.groupby(pieces, key=lambda piece: piece.path):
        yield from pq.ParquetFile(path).iter_batches(
            batch_size=BATCH_ROWS, row_groups=[p.row_group for p in run], columns=list(columns)
        )


@dataclass(frozen=True)
class LocalParquet:
    """A Parquet input whose files the Python tasks read themselves (see the module doc)."""

    spark: SparkSession
    tasks: list[list[Piece]]

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def map_in_arrow(
        self,
        columns: Sequence[str],
        fn: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]],
        schema: str | object,
    ) -> DataFrame:
        """``fn`` over each task's batches of ``columns``, one Spark task per group of
        pieces: what ``df.select(*columns).mapInArrow(fn, schema)`` gives, bar row order."""
        tasks, cols = self.tasks, list(columns)

        def run(ids: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in ids:
                for task in batch.column(0).to_pylist():
                    yield from fn(read_pieces(tasks[task], cols))

        frame = self.spark.range(self.n_tasks, numPartitions=self.n_tasks)
        return frame.mapInArrow(run, schema)


def local_parquet(df: DataFrame, columns: Sequence[str]) -> LocalParquet | None:
    """The DataFrame's files for the tasks to read, if all are local and hold ``columns``;
    None otherwise (then use the DataFrame itself). One task per core at the least, and
    at most TASK_BYTES of row groups per task where a greedy fill allows."""
    uris = fsio.input_files(df)
    paths = [local_path(uri) for uri in uris]
    if not paths or any(p is None for p in paths):
        return None
    pieces = pieces_of(paths, columns)
    if not pieces:
        return None
    spark = df.sparkSession
    by_size = -(-sum(p.bytes for p in pieces) // TASK_BYTES)
    n_tasks = max(spark.sparkContext.defaultParallelism, by_size)
    return LocalParquet(spark, plan_tasks(pieces, n_tasks))
