"""The driver's share of the model: read the weights once, check they fit, and turn them
into what the workers run (the weights file for ``keras``, a converted ``.tflite`` for
``litert``), which the job then broadcasts.

With a cached conversion (:mod:`fruits_spark.inference.converted`) the driver never imports
TensorFlow; a miss builds the network once, which also checks the weights fit it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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


def prepare(spark, model: str, image_size: int, weights: str, runtime: str, threads: int):
    """The run's :class:`DriverModel`."""
    runtimes.check(runtime)
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
    key = converted.cache_key(
        model, image_size, "random" if data is None else models.sha256(data.data), runtime
    )
    hit = converted.load(key)
    if hit is not None:
        content, manifest = hit
        conversion = "cached"
    else:
        start = time.perf_counter()
        models.configure_threads(threads)
        if data is None:
            data = Weights(models.random_weights_bytes(model, image_size), ".weights.h5")
        content = runtimes.to_litert(build_checked(model, image_size, data, weights))
        manifest = {"model": model, "image_size": image_size, "weights": weights,
                    "weights_sha256": models.sha256(data.data), "runtime": runtime}  # fmt: skip
        converted.store(key, content, manifest)
        conversion = f"converted in {time.perf_counter() - start:.1f} s"
    config = ModelConfig(
        model, image_size, runtime, models.sha256(content), manifest["weights_sha256"], "",
        threads,
    )  # fmt: skip
    return DriverModel(config, content, conversion)
