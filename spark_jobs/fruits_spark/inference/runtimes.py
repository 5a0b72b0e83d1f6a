"""What runs the CNN on the workers: LiteRT (a converted ``.tflite``) or Keras itself.

LiteRT's interpreter with its XNNPACK delegate runs the MobileNets ~4x faster than Keras
``predict`` on a CPU with the same features (``make bench``, docs/performance.md), and
its wheel (``ai-edge-litert``) needs no TensorFlow: a worker that runs it starts in well
under a second instead of importing TensorFlow and tracing the network. The conversion
needs TensorFlow and happens once per model, size and weights: by ``make stage-weights``
for the cloud nodes (``featurize --model-file``), or on the local backend's driver
(:mod:`fruits_spark.inference.converted`). ``keras`` stays available as the reference
where Keras is installed (the local backend), and is the faster one there for VGG16;
``auto``, the default, picks per model, and always LiteRT given a converted file, as on
the cloud nodes, which have no Keras (docs/performance.md has the runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from fruits_spark.rules import (
    AUTO,
    DEFAULT_RUNTIME,
    FASTEST,
    KERAS,
    LITERT,
    RUNTIMES,
    check,
    resolve,
)

__all__ = ["AUTO", "DEFAULT_RUNTIME", "FASTEST", "KERAS", "LITERT", "RUNTIMES", "check", "resolve"]
LITERT_DIST = "ai-edge-litert"


def to_litert(net: Any) -> bytes:
    """``net`` (a Keras model) as a ``.tflite`` flatbuffer, float32, no quantization: the
    same arithmetic as Keras, so the same features to float rounding."""
    import contextlib
    import io

    from fruits_spark.inference.models import import_tensorflow

    tf = import_tensorflow()
    # Keras' export prints every captured variable (hundreds of lines) to stdout: the
    # step's log is for the job's own lines
    with contextlib.redirect_stdout(io.StringIO()):
        return tf.lite.TFLiteConverter.from_keras_model(net).convert()


class LiteRTModel:
    """One interpreter per Python worker, resized when the batch size changes (the last
    batch of a partition is smaller); ``threads`` is the task's share of the cores."""

    def __init__(self, content: bytes, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=content, num_threads=max(1, threads))
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._rows = -1

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self._rows:
            self._interpreter.resize_tensor_input(self._input, list(batch.shape))
            self._interpreter.allocate_tensors()
            self._rows = len(batch)
        self._interpreter.set_tensor(self._input, batch)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()


class KerasModel:
    """The Keras network's forward pass as one ``tf.function`` traced once for any batch
    size: ``predict_on_batch`` traces once per new batch shape, and a trace costs as much
    as many batches; the last, smaller batch of every partition would pay that."""

    def __init__(self, net: Any, image_size: int):
        from fruits_spark.inference.models import import_tensorflow

        tf = import_tensorflow()
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
        self.net = net
        self._forward = tf.function(lambda x: net(x, training=False), input_signature=[spec])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.asarray(self._forward(batch), dtype=np.float32)
