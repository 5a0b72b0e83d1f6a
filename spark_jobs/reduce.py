"""Reduce CNN feature vectors with an exact PCA fitted on mean-centred features.

    spark-submit --py-files fruits_spark.zip spark_jobs/reduce.py \\
        --input s3://bucket/runs/batch=2026-11-24/features/ \\
        --output s3://bucket/runs/batch=2026-11-24/pca/ \\
        --report s3://bucket/runs/batch=2026-11-24/report/ \\
        [--variance 0.95 | --k N] [--rejected s3://bucket/runs/batch=2026-11-24/rejected/]

Reads Parquet ``path, label, features`` (as featurize.py writes it) and writes Parquet
``path, label, pca`` (``pca``: array<float> of length k = the smallest number of
components whose cumulative explained variance reaches ``--variance``, or ``--k``).
Under ``--report``: ``report.json``, ``cumulative_variance.png``, ``pca_scatter.png``.
Components follow scikit-learn's sign convention (largest-|value| entry positive); see
``fruits_spark.pca.linalg``. Exit status 2 on bad arguments or unusable input.

A local input of at most 20,000 rows and 64 MB (a day's batch on the local backend) is
read, fitted and projected by the driver, and written by one Spark job; any other runs
in Spark's tasks (``fruits_spark.pca.passes``). Both give the same output and report,
but for the label-separation sample of an output of more than 2,000 rows, which each
draws its own way (seeded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fruits_spark import progress as job_progress
from fruits_spark import rules
from fruits_spark.io import fsio, local_parquet
from fruits_spark.io.arrow_vectors import vectors_to_matrix
from fruits_spark.jobs import JobError, run_job
from fruits_spark.pca import passes as pca_passes
from fruits_spark.pca import report, separation
from fruits_spark.pca import summary as feature_summary
from fruits_spark.pca.linalg import PCAModel, choose_k

MAX_SCATTER_POINTS = 20_000  # rows drawn in pca_scatter.png (a seeded sample beyond that)
REQUIRED_COLUMNS = ("path", "label", "features")
REJECTED_COLUMNS = ("path", "label", "error")
METADATA_KEYS = ("model", "weights", "weights_sha256", "image_size", "runtime", "precision")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="Parquet path, label, features")
    p.add_argument("--output", required=True, help="Parquet path, label, pca")
    p.add_argument("--report", required=True, help="folder for report.json and plots")
    p.add_argument(
        "--rejected",
        default=None,
        help="featurize's rejected Parquet (path, label, error), listed in the report",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--variance",
        type=float,
        default=None,
        help=f"keep the fewest components explaining this share (default {rules.VARIANCE_DEFAULT})",
    )
    size.add_argument("--k", type=int, default=None, help="keep exactly this many components")
    job_progress.add_arguments(p)  # --progress URI, --progress-interval S
    args = p.parse_args(argv)
    if args.k is None and args.variance is None:
        args.variance = rules.VARIANCE_DEFAULT
    error = None if args.variance is None else rules.variance_error(args.variance)
    if error:
        raise JobError(f"--variance {error}")
    if args.k is not None and args.k < 1:
        raise JobError(f"--k must be at least 1, got {args.k}")
    return args


def read_features(spark: SparkSession, uri: str) -> DataFrame:
    try:
        df = spark.read.parquet(uri)
    except AnalysisException as exc:
        raise JobError(f"--input {uri}: cannot read Parquet: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise JobError(f"--input {uri}: no column {', '.join(missing)} (has {df.columns})")
    return df.select(*REQUIRED_COLUMNS)


def features_metadata(df: DataFrame) -> dict:
    """What featurize.py recorded about the features (model, weights, ...), if anything."""
    return dict(df.schema["features"].metadata or {})


def output_metadata(source: dict, model: PCAModel, k: int) -> dict:
    kept = {key: source[key] for key in METADATA_KEYS if source.get(key) is not None}
    return {**kept, "n_features": model.n_features, "k": k, "pca_of": "features"}


def label_counts(counts: dict) -> dict[str, int]:
    """Rows per label as the fit pass counted them, a null label shown as ``(null)``."""
    return {("(null)" if label is None else label): n for label, n in counts.items()}


def scatter_points(df: DataFrame, k: int, n_rows: int) -> tuple[np.ndarray, list[str]]:
    """The first two ``pca`` values (one if k == 1) and label of at most
    MAX_SCATTER_POINTS rows (a seeded sample of larger outputs)."""
    if n_rows > MAX_SCATTER_POINTS:
        df = df.sample(fraction=MAX_SCATTER_POINTS / n_rows, seed=0)
    cols = [F.col("pca")[i].alias(f"pc{i + 1}") for i in range(min(k, 2))]
    rows = df.select("label", *cols).collect()
    coords = np.array([[r[f"pc{i + 1}"] for i in range(len(cols))] for r in rows], dtype=float)
    return coords.reshape(len(rows), len(cols)), [str(r["label"]) for r in rows]


def separation_sample(df: DataFrame, n_rows: int) -> tuple[np.ndarray, list[str]]:
    """Labels and whole PCA vectors of about ``separation.MAX_ROWS`` rows (seeded)."""
    if n_rows > separation.MAX_ROWS:
        df = df.sample(fraction=min(1.0, 1.2 * separation.MAX_ROWS / n_rows), seed=1)
    rows = df.select("label", "pca").collect()
    vectors = np.array([r["pca"] for r in rows], dtype=float)
    return vectors, [str(r["label"]) for r in rows]


def read_rejected(spark: SparkSession, uri: str | None) -> list[dict] | None:
    """featurize's rejected rows (few: one per undecodable file), or None when not asked.
    A local folder is read by pyarrow: through Spark, a handful of rows costs two jobs
    (the schema's and the collect)."""
    if uri is None:
        return None
    folder = local_parquet.local_path(fsio.qualified(spark, uri))
    try:
        if folder is not None and Path(folder).is_dir():  # Spark's hidden files left out
            return pq.read_table(folder, columns=list(REJECTED_COLUMNS)).to_pylist()
        rows = spark.read.parquet(uri).select(*REJECTED_COLUMNS).collect()
    except (AnalysisException, pa.ArrowException) as exc:
        raise JobError(f"--rejected {uri}: cannot read Parquet: {exc}") from exc
    return [r.asDict() for r in rows]


def write_report(spark: SparkSession, folder: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        fsio.write_bytes(spark, f"{folder.rstrip('/')}/{name}", data)


Points = tuple[np.ndarray, list[str], np.ndarray, list[str]]  # plot, its labels, sample, labels


def project_in_spark(
    features: DataFrame,
    model: PCAModel,
    k: int,
    metadata: dict,
    local: local_parquet.LocalParquet | None,
    output: str,
) -> Points:
    """The projection in Spark's tasks, written to ``output``; the report's points (the
    plot's and the separation sample's, with their labels) read back from what was
    written: a small column, with the schema just written (no schema-inference job, no
    second projection)."""
    spark = features.sparkSession
    projected = pca_passes.project(features, model, k, metadata=metadata, local=local)
    projected.write.mode("overwrite").parquet(output)
    written = spark.read.schema(projected.schema).parquet(output)
    return (*scatter_points(written, k, model.n_rows), *separation_sample(written, model.n_rows))


def project_in_driver(
    features: DataFrame, rows: pa.Table, model: PCAModel, k: int, metadata: dict, output: str
) -> Points:
    """The projection of ``rows`` (every row, which the driver holds) by the driver,
    written to ``output`` by one Spark job with the schema Spark's tasks would write; the
    report's points are those same rows (every one of them in the plot; the separation
    samples its own: fruits_spark.pca.separation)."""
    table = pca_passes.project_rows(rows, model, k)
    kept = [f for f in features.schema.fields if f.name != "features"]
    schema = T.StructType([*kept, T.StructField("pca", T.ArrayType(T.FloatType()))])
    frame = features.sparkSession.createDataFrame(table, schema=schema)
    frame = frame.withColumn("pca", F.col("pca").alias("pca", metadata=metadata))
    frame.write.mode("overwrite").parquet(output)
    vectors = vectors_to_matrix(table.column("pca")).astype(np.float64)  # as written
    labels = [str(label) for label in table.column("label").to_pylist()]
    return vectors[:, : min(k, 2)], labels, vectors, labels


def reduce_features(spark: SparkSession, args: argparse.Namespace) -> dict:
    """The whole job on an existing session: read, fit, project, write, report.
    Returns the report. A small local input (a day's batch) is fitted and projected by
    the driver (``fruits_spark.pca.passes.driver_rows``): then one Spark job writes the
    output, where Spark's tasks would take five jobs and their Python workers."""
    progress = job_progress.start(spark, "reduce", args)
    progress.set_phase("pass 1/2: moments")
    features = read_features(spark, args.input)
    local = local_parquet.local_parquet(features, REQUIRED_COLUMNS)  # None: Spark reads
    rows = pca_passes.driver_rows(local, REQUIRED_COLUMNS)  # None: Spark's tasks compute
    try:
        # One pass: validation, rows per label and moments; the second pass projects.
        if rows is None:
            fitted = pca_passes.summarize(features, "features", count_by="label", local=local)
        else:
            fitted = pca_passes.summarize_rows(features, rows, "features", count_by="label")
        model = feature_summary.fit_summary(fitted, "features")
    except JobError as exc:
        raise JobError(f"--input {args.input}: {exc}") from exc
    k = choose_k(model.explained_variance_ratio, variance=args.variance, k=args.k)

    source_meta = features_metadata(features)
    metadata = output_metadata(source_meta, model, k)
    progress.set_phase("pass 2/2: projection")
    if rows is None:
        coords, labels, vectors, vector_labels = project_in_spark(
            features, model, k, metadata, local, args.output
        )
    else:
        coords, labels, vectors, vector_labels = project_in_driver(
            features, rows, model, k, metadata, args.output
        )
    progress.set_phase("report")
    summary = report.build_report(
        n_rows=model.n_rows,
        n_features=model.n_features,
        k=k,
        explained_variance_ratio=model.explained_variance_ratio,
        explained_variance=model.explained_variance,
        variance_threshold=args.variance,
        k_requested=args.k,
        features_metadata=source_meta,
        labels=label_counts(fitted.counts),
        inputs={"input": args.input, "output": args.output},
        rejected=read_rejected(spark, args.rejected),
    )
    summary["separation"] = separation.separation(vectors, vector_labels, n_rows=model.n_rows)
    write_report(
        spark,
        args.report,
        {
            "report.json": report.report_json(summary),
            "cumulative_variance.png": report.cumulative_variance_png(
                model.explained_variance_ratio, k, args.variance
            ),
            "pca_scatter.png": report.pca_scatter_png(coords, labels),
        },
    )
    progress.finish(model.n_rows)
    return summary


def separation_line(section: dict) -> str:
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    return (
        f"label separation on {section['sample_rows']} of {section['of_rows']} rows: "
        f"1-NN accuracy {fmt(section['nn1_accuracy'])}, silhouette {fmt(section['silhouette'])}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spark = SparkSession.builder.appName("fruits-reduce").getOrCreate()
    args.started_at = job_progress.driver_started(spark)  # the step's time counts from here
    try:
        summary = reduce_features(spark, args)
        print(
            f"reduce: {summary['n_rows']} rows, {summary['n_features']} features "
            f"-> k={summary['k']} (cumulative variance {summary['cumulative_variance'][-1]:.4f})"
        )
        print(f"reduce: {separation_line(summary['separation'])}")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
