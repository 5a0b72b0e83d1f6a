"""The driver's share of the model: read the weights once, check they fit, and turn them
into what the workers run (the weights file for ``keras``, a converted ``.tflite`` for
``litert``), which the job then broadcasts.

With a cached conversion (:mod:`fruits_spark.inference.converted`) the driver never imports
TensorFlow; a miss builds the network once, which also checks the weights fit it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from fruits_spark import rules
from fruits_spark.inference import converted, models, runtimes
from fruits_spark.inference.workers import ModelConfig
from fruits_spark.io import fsio
from fruits_spark.jobs import JobError


@dataclass(frozen=True)
class Weights:
    data: bytes
    suffix: str  # how Keras must name the file to pick the right loader


@dataclass(frozen=True)
class DriverModel:
    config: ModelConfig
    payload: bytes  # what every worker receives (broadcast)
    conversion: str  # "cached", "converted in 12.3 s", or "" (keras: nothing converted)
    manifest: dict = field(default_factory=dict)  # the converted file's (int8: its fidelity)


def resolve_weights(spark, model: str, image_size: int, weights: str) -> Weights:
    """The weights file, read once on the driver."""
    if weights == "random":
        return Weights(models.random_weights_bytes(model, image_size), ".weights.h5")
    if weights == "imagenet":
        try:
            return Weights(models.imagenet_weights_path(model).read_bytes(), ".h5")
        except models.WeightsUnavailable as exc:
            raise JobError(str(exc)) from exc
    try:
        return Weights(fsio.read_bytes(spark, weights), models.weights_suffix(weights))
    except Exception as exc:  # py4j wraps Hadoop's errors; the message is what matters
        raise JobError(f"--weights {weights}: cannot read the file: {exc}") from exc


def build_checked(model: str, image_size: int, weights: Weights, source: str):
    """The network with ``weights`` loaded; a JobError, once on the driver, if they do not
    fit it (not in every task)."""
    try:
        return models.build_from_bytes(model, image_size, weights.data, weights.suffix)
    except Exception as exc:
        raise JobError(f"--weights {source} do not fit {model}@{image_size}: {exc}") from exc


def from_model_file(
    spark, model_file: str, model: str, image_size: int, threads: int, precision: str = rules.FP32
):
    """The run's :class:`DriverModel` from a converted file (``featurize --model-file``)
    and its manifest beside it (``<name>.json``, written after it): read through Hadoop's
    file system (``s3://``, ``s3a://``, local), checked against the run's model, size and precision.
    No TensorFlow, no Keras: what the cloud nodes run."""
    manifest_uri = model_file.removesuffix(".tflite") + ".json"
    try:
        content = fsio.read_bytes(spark, model_file)
        manifest = json.loads(fsio.read_bytes(spark, manifest_uri))
    except Exception as exc:  # py4j wraps Hadoop's errors; the message is what matters
        raise JobError(
            f"--model-file {model_file}: cannot read it or its manifest {manifest_uri}: {exc} "
            "(make stage-weights converts and uploads both: docs/weights.md)"
        ) from exc
    if why := converted.check_manifest(manifest, content, model, image_size, precision):
        raise JobError(f"--model-file {model_file}: {why}")
    config = ModelConfig(
        model, image_size, runtimes.LITERT, models.sha256(content),
        manifest.get("weights_sha256", ""), "", threads,
    )  # fmt: skip
    return DriverModel(config, content, f"loaded from {model_file}", manifest)


def prepare(
    spark,
    model: str,
    image_size: int,
    weights: str,
    runtime: str,
    threads: int,
    model_file: str | None = None,
    precision: str = rules.FP32,
):
    """The run's :class:`DriverModel`: ``model_file`` when given, else made here."""
    runtimes.check(runtime)
    if why := rules.precision_error(precision, model, runtime):
        raise JobError(f"--precision {why}")
    if model_file:
        return from_model_file(spark, model_file, model, image_size, threads, precision)
    if runtime == runtimes.KERAS:
        models.configure_threads(threads)
        data = resolve_weights(spark, model, image_size, weights)
        if weights != "random":  # random ones were just saved from this very network
            build_checked(model, image_size, data, weights)
        sha = models.sha256(data.data)
        config = ModelConfig(model, image_size, runtime, sha, sha, data.suffix, threads)
        return DriverModel(config, data.data, "")
    # random weights are seeded: no need to make them to know the cache entry
    data = None if weights == "random" else resolve_weights(spark, model, image_size, weights)
    try:
        content, manifest, conversion = converted.cached_or_convert(
            model, image_size, weights, None if data is None else data.data,
            ".weights.h5" if data is None else data.suffix, threads, precision,
        )  # fmt: skip
    except Exception as exc:
        raise JobError(f"--weights {weights} do not fit {model}@{image_size}: {exc}") from exc
    config = ModelConfig(
        model, image_size, runtime, models.sha256(content), manifest["weights_sha256"], "",
        threads,
    )  # fmt: skip
    return DriverModel(config, content, conversion, manifest)
