"""The CNNs used for transfer learning: built without their top, global-average pooled.

TensorFlow and numpy are imported inside functions only, so the driver's argument
parsing and the tests of decoding never pay for them. The registry itself
(:data:`MODELS`) is in :mod:`fruits_spark.rules`, which the DAG reads when it is parsed.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from fruits_spark.rules import MODELS, ModelSpec

__all__ = ["MODELS", "ModelSpec"]  # the registry lives in fruits_spark.rules
RANDOM_SEED = 42


class WeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for but are not staged; the message says how to stage them."""


def spec(model: str) -> ModelSpec:
    try:
        return MODELS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}") from None


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def imagenet_weights_path(model: str) -> Path:
    """The cached ImageNet file, or WeightsUnavailable (never a download attempt)."""
    s = spec(model)
    path = keras_cache_dir() / s.imagenet_file
    if not path.is_file():
        offline = f"{s.offline_source}; or, o" if s.offline_source else "O"
        raise WeightsUnavailable(
            f"ImageNet weights for {model} are not cached at {path} and cannot be downloaded "
            f"here. {offline}n a machine with internet access run "
            f"`python -c 'import keras; keras.applications.{s.application}"
            f'(include_top=False, weights="imagenet")\'`; for the cloud backends, stage '
            f"it from that cache with `make stage-weights FRUITS_BUCKET=<bucket>` (it lands "
            f"at s3://<bucket>/models/{model}/{s.imagenet_file})"
        )
    return path


def import_tensorflow() -> Any:
    """TensorFlow and Keras, imported with scikit-learn hidden.

    Keras imports scikit-learn, where it is installed (this venv has it for the tests and
    the bench), only for its ``keras.wrappers`` sklearn estimators, which the jobs never
    use, and every Python worker would pay that import at start-up (``make bench``'s
    worker start-up line shows it). While Keras is imported ``import sklearn``
    fails, which Keras handles by leaving the wrappers unusable; scikit-learn itself stays
    importable afterwards.
    """
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["tensorflow"]
    hide = "sklearn" not in sys.modules
    if hide:
        sys.modules["sklearn"] = None  # type: ignore[assignment]
    try:
        import keras  # noqa: F401
        import tensorflow as tf
    finally:
        if hide and sys.modules.get("sklearn", False) is None:
            del sys.modules["sklearn"]
    return tf


def configure_threads(intra_op: int, inter_op: int = 1) -> None:
    """Cap TensorFlow's pools so Spark's parallel tasks do not oversubscribe the cores.

    Must run before TensorFlow executes anything in this process; later calls are ignored.
    """
    tf = import_tensorflow()

    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, intra_op))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, inter_op))
    except RuntimeError:
        pass  # TensorFlow already initialised in this worker: keep its pools.


def build_model(model: str, image_size: int, weights_file: str | Path | None = None) -> Any:
    """The no-top, average-pooled network; seeded random weights when no file is given."""
    import_tensorflow()
    import keras

    s = spec(model)
    if weights_file is None:
        keras.utils.set_random_seed(RANDOM_SEED)
    net = getattr(keras.applications, s.application)(
        include_top=False,
        weights=None,
        input_shape=(image_size, image_size, 3),
        pooling="avg",
    )
    if weights_file is not None:
        net.load_weights(str(weights_file))
    return net


def build_from_bytes(model: str, image_size: int, data: bytes, suffix: str) -> Any:
    """:func:`build_model` from a weights file's bytes (Keras loads only from a path named
    with ``suffix``, so they go through a temporary file)."""
    fd, path = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return build_model(model, image_size, path)
    finally:
        os.unlink(path)


# keras.applications.imagenet_utils' "caffe" mode: ImageNet's mean pixel, BGR order
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def preprocess(model: str, batch: np.ndarray) -> np.ndarray:
    """The model's keras.applications ``preprocess_input``, in numpy on a float32 copy.

    The same float32 operations in the same order as Keras (a test holds them equal), so
    workers that run a converted model never import TensorFlow for this.
    """
    import numpy as np

    x = batch.astype(np.float32)
    mode = spec(model).preprocess_mode
    if mode == "tf":
        x /= 127.5
        x -= 1.0
    elif mode == "caffe":
        x = x[..., ::-1].copy()
        for channel, mean in enumerate(CAFFE_MEAN_BGR):
            x[..., channel] -= np.float32(mean)
    else:  # pragma: no cover - the registry holds only these
        raise ValueError(f"unknown preprocess mode {mode!r}")
    return x


def random_weights_bytes(model: str, image_size: int) -> bytes:
    """The seeded random weights as a .weights.h5 file's bytes, so every worker loads the same."""
    net = build_model(model, image_size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{model}-random.weights.h5"
        net.save_weights(str(path))
        return path.read_bytes()


def weights_suffix(source: str) -> str:
    """Keras picks the loader from the file name: legacy ``.h5`` or Keras 3 ``.weights.h5``."""
    return ".weights.h5" if source.endswith(".weights.h5") else ".h5"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
