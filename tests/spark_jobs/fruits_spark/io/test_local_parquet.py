"""Reduce's own Parquet reading (local files, pyarrow in the tasks) against Spark's reader."""

from __future__ import annotations

import numpy as np
import pytest
from job_support import LABELS, low_rank_features
from pyspark.sql import functions as F

from fruits_spark.io import local_parquet
from fruits_spark.io.local_parquet import Piece, local_path, plan_tasks
from fruits_spark.pca import passes as pca_passes
from fruits_spark.pca.summary import fit_summary


def test_local_path_decodes_file_uris_and_refuses_other_schemes():
    assert (
        local_path("file:///data/Pêche%20plate/part-0.parquet")
        == "/data/Pêche plate/part-0.parquet"
    )
    assert local_path("file:/tmp/x%25y.parquet") == "/tmp/x%y.parquet"
    assert local_path("s3://bucket/runs/features/part-0.parquet") is None
    assert local_path("hdfs://nn/features/part-0.parquet") is None


def test_plan_tasks_balances_bytes_and_keeps_each_piece_once_in_order():
    sizes = [90, 10, 10, 10, 40, 40, 5]
    pieces = [Piece(f"f{i}", 0, 1, b) for i, b in enumerate(sizes)]
    tasks = plan_tasks(pieces, 3)
    assert len(tasks) == 3
    assert sorted(p.path for t in tasks for p in t) == sorted(p.path for p in pieces)
    loads = sorted(sum(p.bytes for p in t) for t in tasks)
    assert loads == [55, 60, 90]  # greedy, largest first: 90 | 40+10+10 | 40+10+5
    for t in tasks:  # inside a task, the input's order
        assert [pieces.index(p) for p in t] == sorted(pieces.index(p) for p in t)
    assert plan_tasks(pieces[:2], 8) == [[pieces[0]], [pieces[1]]]  # no empty tasks


@pytest.fixture(scope="module")
def parquet_input(spark, tmp_path_factory):
    """Two files of several row groups each (a 4 KB block size), in a folder with a space."""
    x = low_rank_features(1200, 24, rank=4, seed=3)
    rows = [
        (f"file:/in/{LABELS[i % 5]}/{i:04d}.jpg", LABELS[i % 5], x[i].tolist()) for i in range(1200)
    ]
    df = spark.createDataFrame(rows, "path string, label string, features array<float>")
    folder = tmp_path_factory.mktemp("lp") / "features with space"
    df.repartition(2).write.option("parquet.block.size", 4096).parquet(str(folder))
    return spark.read.parquet(str(folder)), x


def test_local_reader_plans_every_row_group_of_every_file(parquet_input):
    df, x = parquet_input
    local = local_parquet.local_parquet(df, ["path", "label", "features"])
    assert local is not None
    pieces = [p for t in local.tasks for p in t]
    assert sum(p.rows for p in pieces) == len(x)
    assert len({p.path for p in pieces}) == 2
    assert len(pieces) > 2  # the small block size made several row groups per file
    assert local.n_tasks == 2  # local[2]: one task per core


def test_local_reader_gives_spark_s_summary_and_projection(spark, parquet_input):
    df, x = parquet_input
    local = local_parquet.local_parquet(df, ["path", "label", "features"])
    ours = pca_passes.summarize(df, "features", count_by="label", local=local)
    spark_s = pca_passes.summarize(df, "features", count_by="label")
    assert ours.stats == spark_s.stats
    assert ours.counts == spark_s.counts == {label: 240 for label in LABELS}
    np.testing.assert_allclose(ours.moments.mean, x.astype(np.float64).mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(ours.moments.m2, spark_s.moments.m2, rtol=1e-9, atol=1e-6)

    model = fit_summary(ours)
    a = pca_passes.project(df, model, 3, local=local).orderBy("path").collect()
    b = pca_passes.project(df, model, 3).orderBy("path").collect()
    assert [r.path for r in a] == [r.path for r in b] and len(a) == 1200
    assert [r.label for r in a] == [r.label for r in b]
    np.testing.assert_allclose([r.pca for r in a], [r.pca for r in b], rtol=1e-6)


def test_no_local_reader_for_a_missing_column_or_a_non_file_input(spark, parquet_input):
    df, _ = parquet_input
    assert local_parquet.local_parquet(df, ["path", "label", "embedding"]) is None
    in_memory = spark.range(3).withColumn("features", F.array(F.lit(1.0)))
    assert local_parquet.local_parquet(in_memory, ["features"]) is None
