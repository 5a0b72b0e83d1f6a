"""A packed batch, as featurize reads it: Parquet shards of image bytes in
``<input>/_packed/`` (written by the plugins' ``fruits.storage.packing``; the layout is
``fruits_spark.rules.PACKED_FOLDER`` / ``PACKED_COLUMNS``).

Why shards: 90k small objects cost 90k requests each way and S3's per-object latency
each time Spark reads them; a few dozen shards cost a few dozen. Spark splits a shard at
its row groups (~1 MB), so a batch of any size still spreads over every core.
"""

from __future__ import annotations

from fruits_spark import rules

SPLIT_KEY = "spark.sql.files.maxPartitionBytes"
READER_BATCH_KEY = "spark.sql.parquet.columnarReaderBatchSize"
TASKS_PER_CORE = 4  # the last task's tail is at most a quarter of a core's share
MIN_SPLIT_BYTES = 1024**2  # a row group's size: a smaller split reads nothing


def folder(input_uri: str) -> str:
    return f"{input_uri.rstrip('/')}/{rules.PACKED_FOLDER}"


def split_bytes(total_bytes: int, cores: int) -> int:
    """Bytes per input split: :data:`TASKS_PER_CORE` tasks for each core. Spark's own rule
    (``maxPartitionBytes``, 128 MB) makes 3 tasks of 361 MB on 2 cores, the last one
    alone on one core for a third of the job."""
    return max(MIN_SPLIT_BYTES, -(-total_bytes // max(1, cores * TASKS_PER_CORE)))
