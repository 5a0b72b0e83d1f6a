"""The int8 conversion (``precision=int8``): full integer quantization, with the layers
that lost the features kept in float, and its fidelity measured on held-out photographs.

TensorFlow's converter with a representative data set (the fixed calibration crops of
:mod:`fruits_spark.inference.calibration`, never the batch) and per-channel weights.
Quantizing every layer of MobileNet v1 gave a cosine to fp32's features of only 0.90
(docs/precision.md): TensorFlow's quantization debugger showed most of the error at the
start of the network (``conv_dw_1``, ``conv_pw_1``: errors of ~2.5 quantization steps where
rounding alone makes 0.3). :data:`FLOAT_LAYERS` keeps the first convolution and the first
depthwise-separable block in float (about a tenth of the multiply-adds), with the average
pooling (the features themselves are not rounded to 256 levels); the rest runs in int8.
:data:`fruits_spark.rules.INT8_SCHEME` names this choice in the converted model's key.
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from fruits_spark import rules
from fruits_spark.inference import calibration
from fruits_spark.pca import separation

# Keras layer names kept in float, per model (rules.INT8_MODELS lists the measured ones)
FLOAT_LAYERS: dict[str, tuple[str, ...]] = {"mobilenet": ("conv1", "conv_dw_1", "conv_pw_1")}
FLOAT_OPS = ("MEAN",)  # the global average pooling: the features, in float
HELD_OUT_PER_SOURCE = 8  # fidelity crops a held-out source: 104 in all, seconds to run


def _converter(net: Any, data: np.ndarray) -> Any:
    from fruits_spark.inference.models import import_tensorflow

    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(net)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in data)
    return converter


def layer_outputs(content: bytes, layers: tuple[str, ...]) -> list[str]:
    """The output tensors, in a converted model, of the ops that compute the Keras
    ``layers`` (a convolution with its folded batch norm and ReLU6 is one op): what the
    quantization debugger's ``denylisted_nodes`` names."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        out = names.get(op["outputs"][0], "")
        if any(f"/{layer}_bn" in out or f"/{layer}_relu" in out for layer in layers):
            found.append(out)
    return found


def to_int8(net: Any, model: str, image_size: int) -> bytes:
    """``net`` (``model``'s no-top, pooled Keras network at ``image_size``) as an int8
    ``.tflite`` with float32 input and output; :data:`FLOAT_LAYERS` and the pooling float."""
    from fruits_spark.inference import models

    tf = models.import_tensorflow()
    if model not in rules.INT8_MODELS:
        raise ValueError(rules.precision_error(rules.INT8, model))
    data = models.preprocess(model, calibration.calibration_images(image_size))
    converter = _converter(net, data)
    # Keras' export prints every captured variable to stdout: the step's log is for the job
    with contextlib.redirect_stdout(io.StringIO()):
        layers = FLOAT_LAYERS.get(model, ())
        # the tensors' names do not depend on the calibration: two images name them
        nodes = layer_outputs(_converter(net, data[:2]).convert(), layers) if layers else []
        if len(nodes) != len(layers):
            raise RuntimeError(f"int8: found {nodes} for the float layers {layers}")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: ([x[None]] for x in data[:2]),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(FLOAT_OPS), denylisted_nodes=nodes
            ),
        )
        return debugger.get_nondebug_quantized_model()


def fidelity(net: Any, content: bytes, model: str, image_size: int) -> dict:
    """The int8 model against ``net`` (float) on the held-out crops (photographs calibration
    never saw, labelled by photograph): the cosine of each crop's features to fp32's (mean,
    1st percentile), and leave-one-out 1-NN accuracy and silhouette (cosine), fp32 and int8.
    A small set, measured in seconds at every conversion; ``bench.precision.study`` has the
    2,080-crop figures (docs/precision.md)."""
    import numpy as np

    from fruits_spark.inference import models, runtimes

    images, labels = calibration.crops(
        calibration.HELD_OUT_SOURCES, HELD_OUT_PER_SOURCE, image_size, seed=0
    )
    x = models.preprocess(model, images)
    reference = np.asarray(net(x, training=False), dtype=np.float32)
    quantized = runtimes.LiteRTModel(content, 1)(x)
    cos = cosine(quantized, reference)
    return {
        "cosine_mean": round(float(cos.mean()), 4),
        "cosine_p1": round(float(np.percentile(cos, 1)), 4),
        "nn1_accuracy": {
            "fp32": round(separation.nn1_accuracy(reference, labels, "cosine"), 4),
            "int8": round(separation.nn1_accuracy(quantized, labels, "cosine"), 4),
        },
        "silhouette": {
            "fp32": round(separation.silhouette(reference, labels, "cosine"), 4),
            "int8": round(separation.silhouette(quantized, labels, "cosine"), 4),
        },
        "images": len(x),
        "set": f"{calibration.VERSION} held-out",
    }


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    import numpy as np

    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, np.finfo(np.float32).tiny)
