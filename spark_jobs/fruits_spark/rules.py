"""The rules the DAG shares with the jobs, in the one place every layer reads them: the
bounds of the run's numbers, the models, the runtimes and which files are images.

The trigger form, the settings (``FRUITS_*``), the ``validate_params`` task and the jobs'
own arguments all check these values; each calls the functions here instead of
repeating them, so a change reaches every layer at once. Standard library only: the DAG
imports this module when it is parsed, on Airflow workers that may have no numpy,
Pillow, TensorFlow or pyspark (tests/spark_jobs/fruits_spark/test_rules.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

IMAGE_SIZE_DEFAULT = 224
IMAGE_SIZE_RANGE = (32, 1024)  # pixels a side: below 32 the CNNs' strides leave nothing
VARIANCE_DEFAULT = 0.95
VARIANCE_RANGE = (0.0, 1.0)  # a share of the variance: above the first, up to the second
BATCH_SIZE_DEFAULT = 64
BATCH_SIZE_RANGE = (1, 4096)
# A Python worker holds one Arrow batch of decoded images: its memory grows with it
# (tests/spark_jobs/test_featurize_memory.py). 256 images of 224x224.
MAX_BATCH_PIXELS = 256 * 224**2


def image_size_error(size: int) -> str | None:
    """Why ``size`` cannot be the images' side, or None."""
    low, high = IMAGE_SIZE_RANGE
    if not low <= size <= high:
        return f"must be between {low} and {high}, got {size}"
    return None


def variance_error(variance: float) -> str | None:
    """Why ``variance`` cannot be the share of variance PCA keeps, or None."""
    low, high = VARIANCE_RANGE
    if not low < variance <= high:
        return f"must be > {low:g} and <= {high:g}, got {variance}"
    return None


def batch_size_error(batch_size: int, image_size: int) -> str | None:
    """Why ``batch_size`` rows per Arrow batch cannot be used at ``image_size``, or None."""
    low, high = BATCH_SIZE_RANGE
    if not low <= batch_size <= high:
        return f"must be between {low} and {high}, got {batch_size}"
    if batch_size * image_size**2 > MAX_BATCH_PIXELS:
        return (
            f"{batch_size} at image size {image_size} holds more than "
            f"{MAX_BATCH_PIXELS // 224**2} images of 224x224 per batch: a Python worker's "
            "memory grows with it"
        )
    return None


# --- the models (fruits_spark.inference.models builds them) ---


@dataclass(frozen=True)
class ModelSpec:
    name: str
    application: str  # keras.applications attribute, e.g. "MobileNetV2"
    module: str  # keras.applications submodule holding preprocess_input
    n_features: int
    imagenet_file: str  # name Keras caches the no-top ImageNet weights under
    preprocess_mode: str  # keras.applications' preprocess_input mode: "tf" or "caffe"
    offline_source: str = ""  # how to stage those weights with no internet, if we can


MODELS: dict[str, ModelSpec] = {
    "mobilenetv2": ModelSpec(
        "mobilenetv2",
        "MobileNetV2",
        "mobilenet_v2",
        1280,
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        "tf",
    ),
    # MobileNet v1 1.0: real ImageNet weights offline via `make weights` (docs/weights.md)
    "mobilenet": ModelSpec(
        "mobilenet",
        "MobileNet",
        "mobilenet",
        1024,
        "mobilenet_1_0_224_tf_no_top.h5",
        "tf",
        "`make weights` (python -m fruits.dev.imagenet_mobilenet) stages them offline",
    ),
    "vgg16": ModelSpec(
        "vgg16",
        "VGG16",
        "vgg16",
        512,
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "caffe",
    ),
}


# --- what runs them (fruits_spark.inference.runtimes) ---

LITERT = "litert"
KERAS = "keras"
AUTO = "auto"
RUNTIMES = (AUTO, LITERT, KERAS)
DEFAULT_RUNTIME = AUTO
# What ``auto`` runs, by model: the faster runtime in ``make bench`` (keras-runtime against
# shipped); a model not named here runs LiteRT.
FASTEST = {"vgg16": KERAS}


def check(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {list(RUNTIMES)}")
    return runtime


def resolve(runtime: str, model: str) -> str:
    """The runtime that runs ``model``: ``auto`` becomes the model's faster one."""
    if check(runtime) == AUTO:
        return FASTEST.get(model, LITERT)
    return runtime


# --- converted models: the .tflite the nodes run (fruits_spark.inference.converted makes
# them; fruits.storage.converted_models finds them in the bucket without TensorFlow) ---

PRECISION = "float32"  # no quantization: the same features as Keras (docs/spark-jobs.md)
# What converts, so what a converted file depends on besides the model, its weights and
# the size: these distributions' versions, as ``name==version`` (constraints.txt pins them).
CONVERTER_DISTS = ("tensorflow-cpu", "keras")
RANDOM_WEIGHTS_ID = "random"  # seeded weights: fixed by the converter's versions

# --- precision: the features of fp32 (the default) or of an int8 model (docs/precision.md) --

FP32 = "fp32"
INT8 = "int8"
PRECISIONS = (FP32, INT8)
DEFAULT_PRECISION = FP32
# The models whose int8 conversion was measured and kept its features (docs/precision.md);
# another model's int8 is refused rather than run unmeasured.
INT8_MODELS = ("mobilenet",)
# What fruits_spark.inference.quantize does (which layers stay float) and the calibration
# set it uses (fruits_spark.inference.calibration): a change to either is a new name here,
# so another converted file.
INT8_SCHEME = "int8-v1"
CALIBRATION_VERSION = "skimage-0.26.0-crops-v1"


def precision_error(precision: str, model: str, runtime: str = AUTO) -> str | None:
    """Why ``model`` cannot make features at ``precision`` with ``runtime``, or None."""
    if precision not in PRECISIONS:
        return f"{precision!r} is not one of {', '.join(PRECISIONS)}"
    if precision == INT8 and model not in INT8_MODELS:
        return (
            f"int8 is measured for {', '.join(INT8_MODELS)} only, not {model} "
            "(docs/precision.md); use fp32"
        )
    if precision == INT8 and runtime == KERAS:
        return "int8 runs a converted model on LiteRT: use runtime auto or litert, not keras"
    return None


def converted_key(
    model: str,
    image_size: int,
    weights_sha256: str,
    converter: str,
    precision: str = FP32,
    calibration: str = CALIBRATION_VERSION,
) -> str:
    """The name of a converted model, ``<model>-<size>-<digest>`` (int8:
    ``<model>-<size>-int8-<digest>``): the digest hashes everything that made the file, so
    a change to any of them is another file. The bucket (``models/<key>.tflite``) and the
    driver's cache use the same names. ``weights_sha256``: of the weights file's bytes, or
    :data:`RANDOM_WEIGHTS_ID`; ``calibration``: the int8 calibration set's version."""
    made_of = {
        "model": model,
        "image_size": int(image_size),
        "weights_sha256": weights_sha256,
        "precision": PRECISION if precision == FP32 else INT8_SCHEME,
        "converter": converter,
    }
    if precision != FP32:
        made_of["calibration"] = calibration
    digest = hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()
    tag = "" if precision == FP32 else f"{precision}-"
    return f"{model}-{int(image_size)}-{tag}{digest[:24]}"


# --- which files of a batch are images (fruits_spark.inference.images decodes them) ---

# Case-insensitive extensions the job reads; everything else in the tree is skipped.
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp")


def has_image_extension(name: str) -> bool:
    return "." in name and name.rsplit(".", 1)[1].lower() in IMAGE_EXTENSIONS


def is_hidden(name: str) -> bool:
    """Spark's file index skips names starting with '.' or '_'; so do we."""
    return name.startswith((".", "_"))


def is_image_path(relative: str) -> bool:
    """A file of a batch the jobs read (``<label>/<file>``): an image's extension, and no
    hidden part in its path."""
    parts = relative.split("/")
    return not any(is_hidden(p) for p in parts) and has_image_extension(parts[-1])


# A batch uploaded from a folder is packed (plugins' ``fruits.storage.packing``): Parquet
# shards of the images' bytes under ``<batch>/_packed/`` (the "_" hides the folder from
# Spark's file listing), one row per image: its path in the batch (``<label>/<file>``),
# its bytes, size and MD5. ``featurize --input`` reads either form.
PACKED_FOLDER = "_packed"
PACKED_COLUMNS = ("name", "content", "size", "md5")
