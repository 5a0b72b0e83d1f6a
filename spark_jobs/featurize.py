"""Featurize a tree of fruit photos with a CNN (transfer learning, no top).

    spark-submit --py-files fruits_spark.zip spark_jobs/featurize.py \\
        --input s3://bucket/raw/batch=2026-11-24/ \\
        --output s3://bucket/runs/batch=2026-11-24/features/ \\
        --rejected s3://bucket/runs/batch=2026-11-24/rejected/ \\
        [--model mobilenetv2|mobilenet|vgg16] [--weights imagenet|random|URI] \\
        [--precision fp32|int8] \\
        [--model-file s3://bucket/models/<key>.tflite] [--image-size 224] \\
        [--batch-size 64] [--csv URI] [--tf-threads N] [--name-input-as URI] \\
        [--progress URI-of-a-folder [--progress-interval 15]]

Writes Parquet ``path, label, features`` (``features``: array<float>; the column's
metadata names the model, weights, runtime and precision, and an int8 model's
fidelity to fp32) and Parquet ``path, label, error`` for every
image that could not be decoded. Exit status 2 on bad arguments or an input
without images. ``path`` names each image under ``--name-input-as`` when given: a job
that reads a staged copy (the local backend) or reads through another scheme (the ec2
nodes' ``s3a://``) still names its images by their ``s3://`` URIs, so its outputs equal
EMR's and nothing has to rewrite them afterwards.

With ``--model-file`` (what the cloud backends pass: the model ``make stage-weights``
converted once, with its ``<key>.json`` manifest beside it) the job runs LiteRT on that
file and never imports TensorFlow or Keras, in the driver or the workers; ``--weights``
then only names the weights in the outputs' metadata. Without it the driver converts
(or reads its cache), which needs TensorFlow: the local backend's way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fruits_spark import progress as job_progress
from fruits_spark import rules
from fruits_spark.inference import driver_model, models, runtimes
from fruits_spark.inference.images import (
    IMAGE_EXTENSIONS,
    glob_for_extensions,
    label_from_path,
)
from fruits_spark.inference.workers import ModelConfig, featurize_batches
from fruits_spark.io import fsio, packed
from fruits_spark.jobs import JobError, run_job

RESULT_TYPE = T.StructType(
    [
        T.StructField("label", T.StringType()),
        T.StructField("features", T.ArrayType(T.FloatType())),
        T.StructField("error", T.StringType()),
    ]
)
# Row groups of the features' Parquet: whoever reads them a row group at a time (reduce's
# local read, a consumer's pyarrow) holds 8 MB, not a 45 MB part of a 90k batch.
FEATURES_ROW_GROUP_BYTES = 8 * 1024**2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="folder of <label>/<image> files")
    p.add_argument("--output", required=True, help="Parquet path, label, features")
    p.add_argument("--rejected", required=True, help="Parquet path, label, error")
    p.add_argument("--model", default="mobilenetv2", choices=sorted(models.MODELS))
    p.add_argument("--weights", default="imagenet", help="imagenet | random | URI of .h5")
    p.add_argument(
        "--model-file",
        default=None,
        help="a converted .tflite (its .json manifest beside it): run it, never TensorFlow",
    )
    p.add_argument(
        "--precision",
        default=rules.DEFAULT_PRECISION,
        choices=rules.PRECISIONS,
        help="fp32 (Keras' features) or int8 (a quantized model: faster, measured "
        "fidelity; mobilenet only, docs/precision.md)",
    )
    p.add_argument("--image-size", type=int, default=rules.IMAGE_SIZE_DEFAULT)
    p.add_argument(
        "--batch-size", type=int, default=rules.BATCH_SIZE_DEFAULT, help="rows per Arrow batch"
    )
    p.add_argument("--csv", default=None, help="also write path,label,feat_0..feat_n as CSV")
    p.add_argument(
        "--name-input-as",
        default=None,
        help="the URI the outputs' path column names --input by (default: --input as "
        "read), e.g. the s3:// URI a local copy was staged from",
    )
    p.add_argument(
        "--runtime",
        default=runtimes.DEFAULT_RUNTIME,
        choices=runtimes.RUNTIMES,
        help="what runs the CNN: auto (the model's faster one), litert (a converted "
        "model) or keras",
    )
    p.add_argument(
        "--threads",
        "--tf-threads",
        dest="threads",
        type=int,
        default=None,
        help="the runtime's threads per task (default: spark.task.cpus)",
    )
    job_progress.add_arguments(p)  # --progress URI, --progress-interval S
    args = p.parse_args(argv)
    error = rules.image_size_error(args.image_size)
    if error:
        p.error(f"--image-size {error}")
    error = rules.batch_size_error(args.batch_size, args.image_size)
    if error:
        p.error(f"--batch-size {error} (tests/spark_jobs/test_featurize_memory.py)")
    if args.model_file:  # a converted model: only LiteRT runs it (the nodes have no Keras)
        if args.runtime == runtimes.KERAS:
            p.error("--runtime keras cannot run --model-file (a converted model): use auto")
        args.runtime = runtimes.LITERT
    if args.precision == rules.INT8 and args.runtime == runtimes.AUTO:
        args.runtime = runtimes.LITERT  # int8 is a converted model
    error = rules.precision_error(args.precision, args.model, args.runtime)
    if error:
        p.error(f"--precision {error}")
    args.runtime = runtimes.resolve(args.runtime, args.model)  # what runs, in the metadata
    return args


@dataclass(frozen=True)
class Listing:
    images: DataFrame  # ``path, content``: the files binaryFile reads, or the packed rows
    total: int  # images listed, zero-byte ones included
    paths: list[str] | None  # every image file, spelled as ``path`` is (None: packed)
    skipped: int  # other files under the input (hidden ones, '.' or '_', Spark never sees)
    input_bytes: int = 0  # of the packed shards (0: files)
    base: str = ""  # the input as every ``path`` spells it, ending in "/"


def image_files(spark: SparkSession, input_uri: str, only_images: bool = True) -> DataFrame:
    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    if only_images:
        reader = reader.option("pathGlobFilter", glob_for_extensions())
    return reader.load(input_uri)


def packed_images(spark: SparkSession, input_uri: str, base: str) -> DataFrame:
    """The rows of a packed batch (``<input>/_packed/*.parquet``: name, content, size,
    md5) as ``path, content``, ``path`` spelled as binaryFile spells an unpacked file
    (``<input>/<label>/<file>``, ``base``: :func:`input_base`)."""
    rows = spark.read.parquet(packed.folder(input_uri))
    return rows.select(F.concat(F.lit(base), F.col("name")).alias("path"), "content")


def input_base(spark: SparkSession, input_uri: str) -> str:
    """The input folder as the ``path`` column spells what is under it, ending in "/"."""
    return fsio.qualified(spark, input_uri).rstrip("/") + "/"  # Path.toString(), as ``path``


def named_path(path: str, base: str, name: str | None) -> str:
    """``path`` under ``base`` named under ``name`` instead (None: unchanged)."""
    if name is None or not path.startswith(base):
        return path
    return name.rstrip("/") + "/" + path[len(base) :]


def named_paths(df: DataFrame, base: str, name: str | None) -> DataFrame:
    """:func:`named_path` on the ``path`` column, in Spark's tasks."""
    if name is None:
        return df
    renamed = F.concat(F.lit(name.rstrip("/") + "/"), F.col("path").substr(len(base) + 1, 2**30))
    path = F.when(F.col("path").startswith(base), renamed).otherwise(F.col("path"))
    return df.withColumn("path", path)


def list_images(spark: SparkSession, input_uri: str) -> Listing:
    """The input's images: a packed batch's rows, or the files from Spark's own file index
    (a parallel listing, and one py4j call): ``binaryFile`` drops zero-byte files, so
    the job needs the full list to report them (packed, they are rows like the others)."""
    if not fsio.exists(spark, input_uri):
        raise JobError(f"--input {input_uri}: no image files found (no such folder)")
    base = input_base(spark, input_uri)
    if fsio.exists(spark, packed.folder(input_uri)):
        images = packed_images(spark, input_uri, base)
        size = fsio.total_bytes(spark, packed.folder(input_uri))
        return Listing(images, images.count(), None, 0, size, base)
    images = image_files(spark, input_uri)
    paths = [fsio.as_spark_path(uri) for uri in fsio.input_files(images)]
    everything = fsio.count_input_files(image_files(spark, input_uri, only_images=False))
    return Listing(images.select("path", "content"), len(paths), paths, everything - len(paths),
                   base=base)  # fmt: skip


def featurize(
    images: DataFrame, config: ModelConfig, payload_broadcast, counter=None, tally=None
) -> DataFrame:
    """``path, content`` -> ``path, label, features, error`` (features null where error is set)."""

    @F.pandas_udf(RESULT_TYPE)
    def embed(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        for frame in featurize_batches(config, payload_broadcast.value, batches):
            if counter is not None:
                counter.add(len(frame))
            if tally is not None:  # live progress, per Arrow batch (fruits_spark.progress)
                tally.add(len(frame))
            yield frame

    return images.select("path", embed("path", "content").alias("r")).select(
        "path", "r.label", "r.features", "r.error"
    )


def features_metadata(
    args: argparse.Namespace, weights_sha256: str, n_features: int, manifest: dict
) -> dict:
    """What the features column's metadata says made them: the model, weights, size,
    runtime and precision; for int8, the fidelity its conversion measured."""
    metadata = {
        "model": args.model,
        "weights": args.weights,
        "weights_sha256": weights_sha256,
        "image_size": args.image_size,
        "n_features": n_features,
        "runtime": args.runtime,
        "precision": getattr(args, "precision", rules.DEFAULT_PRECISION),
    }
    if metadata["precision"] != rules.FP32 and "fidelity" in manifest:
        metadata["fidelity"] = manifest["fidelity"]
    return metadata


def with_metadata(features: DataFrame, metadata: dict) -> DataFrame:
    return features.withColumn("features", F.col("features").alias("features", metadata=metadata))


def wide_csv(features: DataFrame, n_features: int) -> DataFrame:
    cols = [F.col("features")[i].alias(f"feat_{i}") for i in range(n_features)]
    return features.select("path", "label", *cols)


def empty_rejections(
    spark: SparkSession, empty: list[str], base: str = "", name: str | None = None
) -> DataFrame:
    rows = [(named_path(path, base, name), label_from_path(path), "empty file") for path in empty]
    return spark.createDataFrame(rows, "path string, label string, error string")


@dataclass(frozen=True)
class FeaturizeCounts:
    """What a run did with the images it listed, for its one-line report."""

    featurized: int
    rejected: int
    skipped: int
    through_cnn: int  # rows the CNN saw; equals featurized + undecodable when nothing ran twice

    def line(self, args: argparse.Namespace) -> str:
        return (
            f"featurize: {self.featurized} featurized, {self.rejected} rejected, "
            f"{self.skipped} skipped (model {args.model}@{args.image_size}, "
            f"weights {args.weights}, runtime {args.runtime}, "
            f"precision {getattr(args, 'precision', rules.DEFAULT_PRECISION)}, "
            f"{self.through_cnn} images through the CNN)"
        )


# What Spark charges per file when it packs files into input partitions. Its 4 MB
# default makes a task of every 32 small images: Arrow batches of at most 32 rows and a
# task set-up per 32 images. 64 KB lets Spark split the input evenly over the cores
# (maxPartitionBytes still caps a task at 128 MB of files). Measured by `make bench`.
OPEN_COST_KEY = "spark.sql.files.openCostInBytes"
OPEN_COST_BYTES = 64 * 1024


def use_few_input_partitions(spark: SparkSession) -> None:
    """Fewer, bigger input partitions, unless the submitter chose the setting."""
    if not spark.sparkContext.getConf().contains(OPEN_COST_KEY):
        spark.conf.set(OPEN_COST_KEY, str(OPEN_COST_BYTES))


def split_packed_input(spark: SparkSession, listing: Listing, batch_size: int) -> None:
    """Packed shards split at row groups: enough tasks for every core
    (:func:`fruits_spark.io.packed.split_bytes`), and Parquet's reader batches no larger
    than an Arrow batch (its default of 4096 rows of full-size photos would not fit)."""
    if listing.paths is not None:
        return
    conf = spark.sparkContext.getConf()
    if not conf.contains(packed.SPLIT_KEY):
        cores = spark.sparkContext.defaultParallelism
        spark.conf.set(packed.SPLIT_KEY, str(packed.split_bytes(listing.input_bytes, cores)))
    if not conf.contains(packed.READER_BATCH_KEY):
        spark.conf.set(packed.READER_BATCH_KEY, str(batch_size))


def prepare_model(spark: SparkSession, args: argparse.Namespace, threads: int):
    """The driver's model and the broadcast of what the workers run (``.tflite`` or
    weights; 8.8 MB for MobileNetV2@224): ``(DriverModel, Broadcast)``. Made beside the
    listing, the broadcast (slow in a cold JVM: docs/performance.md) is off the way to the
    first batch."""
    prepared = driver_model.prepare(
        spark, args.model, args.image_size, args.weights, args.runtime, threads,
        args.model_file, getattr(args, "precision", rules.DEFAULT_PRECISION),
    )  # fmt: skip
    return prepared, spark.sparkContext.broadcast(prepared.payload)


def discard_broadcast(model_ready: Future) -> None:
    """The run failed before using the model: destroy its broadcast, once it exists."""
    try:
        _, payload_bc = model_ready.result()
    except Exception:
        return  # the model failed too; the first error is the one reported
    payload_bc.destroy()


def outcome_counts(result: DataFrame, paths: list[str] | None) -> tuple[int, int, list[str]]:
    """Images featurized, images read, and the listed paths never read (``paths``: the
    files form's listing; None for a packed input, where every image is a row)."""
    ok = F.col("error").isNull()
    if paths is None:
        counts = {row.ok: row["count"] for row in result.groupBy(ok.alias("ok")).count().collect()}
        return counts.get(True, 0), sum(counts.values()), []
    outcome = result.select("path", ok.alias("ok")).collect()
    read = {row.path for row in outcome}
    return sum(row.ok for row in outcome), len(outcome), [p for p in paths if p not in read]


def run(spark: SparkSession, args: argparse.Namespace) -> FeaturizeCounts:
    """The whole job on an existing session: list, featurize once, write every output."""
    use_few_input_partitions(spark)
    threads = args.threads or int(spark.conf.get("spark.task.cpus", "1"))
    # The driver's model (the --model-file, a cache read, or seconds of TensorFlow) and its
    # broadcast overlap the JVM's file listing; an input error is still reported before a
    # weights error.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare-model") as pool:
        model_ready = pool.submit(prepare_model, spark, args, threads)
        try:
            listing = list_images(spark, args.input)
            if not listing.total:
                raise JobError(
                    f"--input {args.input}: no image files found (looked for "
                    f"{', '.join(IMAGE_EXTENSIONS)}; {listing.skipped} other files skipped)"
                )
        except BaseException:
            discard_broadcast(model_ready)
            raise
        prepared, payload_bc = model_ready.result()
    config = prepared.config
    if prepared.conversion:
        print(f"featurize: {args.runtime} model {prepared.conversion}")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.batch_size))
    split_packed_input(spark, listing, args.batch_size)
    n_features = models.spec(args.model).n_features
    metadata = features_metadata(args, config.weights_sha256, n_features, prepared.manifest)

    counter = spark.sparkContext.accumulator(0)
    reporter = job_progress.start(spark, "featurize", args, counting=True, total=listing.total)
    result = featurize(listing.images, config, payload_bc, counter, reporter.tally())
    # On disk only: a memory cache of a 90k batch's features (~370 MB) grew the executor's
    # heap with the batch; the CNN is not run twice either way.
    result = result.persist(StorageLevel.DISK_ONLY)
    try:
        named = named_paths(result, listing.base, args.name_input_as)
        features = with_metadata(
            named.where(F.col("error").isNull()).select("path", "label", "features"), metadata
        )
        features.write.mode("overwrite").option(
            "parquet.block.size", FEATURES_ROW_GROUP_BYTES
        ).parquet(args.output)
        # One pass over the cached result gives the counts, and for files what was read:
        # zero-byte files, which binaryFile drops, are listed but never read. A packed
        # input has them as rows: counts alone, and the driver never holds the batch.
        featurized, n_read, empty = outcome_counts(result, listing.paths)
        rejected = named.where(F.col("error").isNotNull()).select("path", "label", "error")
        if empty:  # a DataFrame of local rows costs a Spark job seconds: only when needed
            rejected = rejected.unionByName(
                empty_rejections(spark, empty, listing.base, args.name_input_as)
            )
        rejected.coalesce(1).write.mode("overwrite").parquet(args.rejected)
        if args.csv:
            csv = wide_csv(features, n_features).coalesce(1).write.mode("overwrite")
            csv.option("header", True).csv(args.csv)
    finally:
        reporter.stop()
        result.unpersist()
        payload_bc.unpersist()
    reporter.finish(listing.total)
    return FeaturizeCounts(
        featurized=featurized,
        rejected=n_read - featurized + len(empty),
        skipped=listing.skipped,
        through_cnn=counter.value,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spark = SparkSession.builder.appName("fruits-featurize").getOrCreate()
    args.started_at = job_progress.driver_started(spark)  # the step's time counts from here
    try:
        print(run(spark, args).line(args))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
