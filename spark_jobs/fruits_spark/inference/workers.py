"""Worker-side featurization: one model per Python worker, reused by every batch and task.

Spark reuses Python workers between tasks (``spark.python.worker.reuse``), so a
module-level cache makes the model build (a LiteRT interpreter, or Keras' network)
happen once per worker process. Workers that run LiteRT never import TensorFlow.

Profiling: with ``FRUITS_INFERENCE_PROFILE=<folder>`` in the workers' environment, every
worker appends one JSON line per Arrow batch to ``<folder>/<pid>.jsonl``: wall-clock
start and end, rows, and the seconds spent reading the batch from Spark, decoding,
preprocessing, predicting, and suspended in ``yield`` (Spark serialising the result);
one line when the model is built (its build time) and one per task
(start, end, the process's CPU seconds so far).
``bench.run`` uses it to say where the time goes; unset, it costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fruits_spark import profiling
from fruits_spark.inference import models, runtimes
from fruits_spark.inference.images import ImageRejected, decode_image, label_from_path

PROFILE_ENV = "FRUITS_INFERENCE_PROFILE"

_MODELS: dict[tuple[str, int, str], Callable[[np.ndarray], np.ndarray]] = {}
_IMPORTED = time.time()


@dataclass(frozen=True)
class ModelConfig:
    """Everything a worker needs to rebuild the driver's model exactly."""

    model: str
    image_size: int
    runtime: str  # inference.runtimes: "litert" (payload: .tflite) or "keras" (weights)
    payload_sha256: str  # of what the workers receive
    weights_sha256: str
    weights_suffix: str  # keras: how the weights file must be named to load
    threads: int  # the runtime's intra-op threads: the task's cores


def get_model(config: ModelConfig, payload: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """The cached forward pass for this config, built on first use."""
    key = (config.runtime, config.image_size, config.payload_sha256)
    model = _MODELS.get(key)
    if model is None:
        start = time.time()
        model = _build(config, payload)
        _MODELS[key] = model
        folder = profiling.folder_from(PROFILE_ENV)
        if folder:
            profiling.Profile(folder).write(
                {
                    "event": "model",
                    "runtime": config.runtime,
                    "process_start": profiling.process_start(),
                    "module_import": _IMPORTED,
                    "start": start,
                    "end": time.time(),
                }
            )
    return model


def _build(config: ModelConfig, payload: bytes) -> Callable[[np.ndarray], np.ndarray]:
    if config.runtime == runtimes.LITERT:
        return runtimes.LiteRTModel(payload, config.threads)
    models.configure_threads(config.threads)
    net = models.build_from_bytes(config.model, config.image_size, payload, config.weights_suffix)
    return runtimes.KerasModel(net, config.image_size)


@dataclass
class Decoded:
    """One Arrow batch after decoding: a label and either an array or an error per row."""

    labels: list[str]
    arrays: list[np.ndarray | None]
    errors: list[str | None]
    seconds: float = 0.0


def decode_batch(
    image_size: int, paths: Iterable[str], contents: Iterable[bytes | None]
) -> Decoded:
    """Decode every row; undecodable rows get an error, never an array."""
    start = time.perf_counter()
    labels, arrays, errors = [], [], []
    for path, content in zip(paths, contents, strict=True):
        labels.append(label_from_path(path))
        try:
            arrays.append(decode_image(content, image_size))
            errors.append(None)
        except ImageRejected as exc:
            arrays.append(None)
            errors.append(str(exc))
    return Decoded(labels, arrays, errors, time.perf_counter() - start)


def embed_decoded(
    forward: Callable[[np.ndarray], np.ndarray],
    model: str,
    decoded: Decoded,
    timings: dict | None = None,
) -> pd.DataFrame:
    """Preprocess and embed the decoded rows of one batch."""
    arrays = decoded.arrays
    good = [i for i, a in enumerate(arrays) if a is not None]
    features: list[np.ndarray | None] = [None] * len(arrays)
    if good:
        t0 = time.perf_counter()
        batch = models.preprocess(model, np.stack([arrays[i] for i in good]))
        t1 = time.perf_counter()
        out = np.asarray(forward(batch), dtype=np.float32)
        t2 = time.perf_counter()
        for row, i in enumerate(good):
            features[i] = out[row]
        if timings is not None:
            timings["preprocess_s"] = t1 - t0
            timings["predict_s"] = t2 - t1
    return pd.DataFrame({"label": decoded.labels, "features": features, "error": decoded.errors})


def _read_and_decode(image_size: int, batches: Iterator[tuple[pd.Series, pd.Series]]):
    """``(read_s, decoded)`` for the next batch from Spark, or None at the end."""
    start = time.perf_counter()
    try:
        paths, contents = next(batches)
    except StopIteration:
        return None
    read_s = time.perf_counter() - start
    return read_s, decode_batch(image_size, paths, contents)


def _decoded(
    image_size: int, batches: Iterator[tuple[pd.Series, pd.Series]]
) -> Iterator[tuple[float, float, Decoded]]:
    """``(stall_s, read_s, decoded)`` per batch: the next batch is read and decoded in a
    background thread while the caller predicts the current one."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        pending = pool.submit(_read_and_decode, image_size, batches)
        while True:
            t0 = time.perf_counter()
            item = pending.result()
            if item is None:
                return
            stall_s = time.perf_counter() - t0
            pending = pool.submit(_read_and_decode, image_size, batches)
            yield stall_s, *item


def featurize_batches(
    config: ModelConfig, payload: bytes, batches: Iterator[tuple[pd.Series, pd.Series]]
) -> Iterator[pd.DataFrame]:
    """Embed every batch; the next batch is read and decoded in a background thread while
    the current one is predicted (Pillow, LiteRT and TensorFlow all release the GIL)."""
    task_start = time.time()
    forward = get_model(config, payload)
    folder = profiling.folder_from(PROFILE_ENV)
    profile = profiling.Profile(folder) if folder else None
    for stall_s, read_s, decoded in _decoded(config.image_size, iter(batches)):
        start = time.time() - stall_s
        timings: dict = {}
        frame = embed_decoded(forward, config.model, decoded, timings)
        t1 = time.perf_counter()
        yield frame
        if profile is not None:
            profile.write(
                {
                    "event": "batch",
                    "start": start,
                    "end": time.time(),
                    "rows": len(frame),
                    "stall_s": stall_s,
                    "read_s": read_s,
                    "decode_s": decoded.seconds,
                    **timings,
                    "yield_s": time.perf_counter() - t1,
                }
            )
    if profile is not None:
        profile.write(
            {"event": "task", "start": task_start, "end": time.time(), "cpu": time.process_time()}
        )
