"""Worker-side featurization: one model per Python worker, reused by every batch and task.

Spark reuses Python workers between tasks (``spark.python.worker.reuse``), so a
module-level cache makes the expensive model build happen once per worker process.

Profiling: with ``FRUITS_INFERENCE_PROFILE=<folder>`` in the workers' environment, every
worker appends one JSON line per Arrow batch to ``<folder>/<pid>.jsonl``: wall-clock
start and end, rows, and the seconds spent reading the batch from Spark, decoding,
preprocessing, predicting, and suspended in ``yield`` (Spark serialising the result);
one line when the model is built (TensorFlow import and build times) and one per task
(start, end, the process's CPU seconds so far).
``bench.run`` uses it to say where the time goes; unset, it costs nothing.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fruits_spark import models, profiling
from fruits_spark.images import ImageRejected, decode_image, label_from_path

PROFILE_ENV = "FRUITS_INFERENCE_PROFILE"

_MODELS: dict[tuple[str, int, str], object] = {}
_PREDICTORS: dict[int, tuple[object, object]] = {}  # id(net) -> (net, its compiled forward pass)
_IMPORTED = time.time()


@dataclass(frozen=True)
class ModelConfig:
    """Everything a worker needs to rebuild the driver's model exactly."""

    model: str
    image_size: int
    weights_sha256: str
    weights_suffix: str
    tf_threads: int


def get_model(config: ModelConfig, weights: bytes):
    """The cached model for this config, built (and its weights loaded) on first use."""
    key = (config.model, config.image_size, config.weights_sha256)
    net = _MODELS.get(key)
    if net is None:
        start = time.time()
        models.configure_threads(config.tf_threads)
        imported = time.time()
        fd, path = tempfile.mkstemp(suffix=config.weights_suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(weights)
            net = models.build_model(config.model, config.image_size, path)
        finally:
            os.unlink(path)
        _MODELS[key] = net
        folder = profiling.folder_from(PROFILE_ENV)
        if folder:
            profiling.Profile(folder).write(
                {
                    "event": "model",
                    "process_start": profiling.process_start(),
                    "module_import": _IMPORTED,
                    "start": start,
                    "tf_import_s": imported - start,
                    "end": time.time(),
                }
            )
    return net


def predictor(net, image_size: int):
    """``net``'s forward pass as one ``tf.function`` traced once for any batch size.

    ``predict_on_batch`` traces once per new batch shape and once more with a relaxed
    shape, and a trace costs as much as many batches; the last, smaller batch of every
    partition would pay that. A ``None`` batch dimension in the signature traces once.
    """
    entry = _PREDICTORS.get(id(net))
    if entry is None or entry[0] is not net:
        import tensorflow as tf

        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
        entry = (net, tf.function(lambda x: net(x, training=False), input_signature=[spec]))
        _PREDICTORS[id(net)] = entry
    return entry[1]


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
    net, model: str, image_size: int, decoded: Decoded, timings: dict | None = None
) -> pd.DataFrame:
    """Preprocess and embed the decoded rows of one batch."""
    arrays = decoded.arrays
    good = [i for i, a in enumerate(arrays) if a is not None]
    features: list[np.ndarray | None] = [None] * len(arrays)
    if good:
        t0 = time.perf_counter()
        batch = models.preprocess(model, np.stack([arrays[i] for i in good]))
        t1 = time.perf_counter()
        out = np.asarray(predictor(net, image_size)(batch), dtype=np.float32)
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
    config: ModelConfig, weights: bytes, batches: Iterator[tuple[pd.Series, pd.Series]]
) -> Iterator[pd.DataFrame]:
    """Embed every batch; the next batch is read and decoded in a background thread while
    the current one is predicted (Pillow and TensorFlow both release the GIL)."""
    task_start = time.time()
    net = get_model(config, weights)
    folder = profiling.folder_from(PROFILE_ENV)
    profile = profiling.Profile(folder) if folder else None
    for stall_s, read_s, decoded in _decoded(config.image_size, iter(batches)):
        start = time.time() - stall_s
        timings: dict = {}
        frame = embed_decoded(net, config.model, config.image_size, decoded, timings)
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
