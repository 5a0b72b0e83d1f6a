"""Worker-side featurization: one model per Python worker, reused by every batch and task.

Spark reuses Python workers between tasks (``spark.python.worker.reuse``), so a
module-level cache makes the expensive model build happen once per worker process.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fruits_spark import models
from fruits_spark.images import ImageRejected, decode_image, label_from_path

_MODELS: dict[tuple[str, int, str], object] = {}


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
        models.configure_threads(config.tf_threads)
        fd, path = tempfile.mkstemp(suffix=config.weights_suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(weights)
            net = models.build_model(config.model, config.image_size, path)
        finally:
            os.unlink(path)
        _MODELS[key] = net
    return net


def models_built() -> int:
    """How many models this process has built (tests check the once-per-worker promise)."""
    return len(_MODELS)


def featurize_batch(
    net, model: str, image_size: int, paths: Iterable[str], contents: Iterable[bytes | None]
) -> pd.DataFrame:
    """Decode, preprocess and embed one batch; undecodable rows get an error, never a vector."""
    labels, arrays, errors = [], [], []
    for path, content in zip(paths, contents, strict=True):
        labels.append(label_from_path(path))
        try:
            arrays.append(decode_image(content, image_size))
            errors.append(None)
        except ImageRejected as exc:
            arrays.append(None)
            errors.append(str(exc))
    good = [i for i, a in enumerate(arrays) if a is not None]
    features: list[np.ndarray | None] = [None] * len(arrays)
    if good:
        batch = models.preprocess(model, np.stack([arrays[i] for i in good]))
        out = np.asarray(net.predict_on_batch(batch), dtype=np.float32)
        for row, i in enumerate(good):
            features[i] = out[row]
    return pd.DataFrame({"label": labels, "features": features, "error": errors})


def featurize_batches(
    config: ModelConfig, weights: bytes, batches: Iterator[tuple[pd.Series, pd.Series]]
) -> Iterator[pd.DataFrame]:
    net = get_model(config, weights)
    for paths, contents in batches:
        yield featurize_batch(net, config.model, config.image_size, paths, contents)
