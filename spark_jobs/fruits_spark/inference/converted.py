"""Converted models: made once where TensorFlow is, then only read.

Converting a network to ``.tflite`` takes TensorFlow's import, the network's build and
the converter: seconds to a minute, every time for the same result. :func:`convert`
does it for ``make stage-weights`` (which puts the file in the bucket, where the cloud
nodes read it through ``featurize --model-file``) and for the local backend's driver,
which keeps what it converted in a cache on its disk.

Both name a file by :func:`fruits_spark.rules.converted_key`: the model, the image size,
the weights' sha256 (or ``random``: seeded, so fixed by the versions), the precision (for
int8: the quantization scheme and the calibration set's version, :mod:`.quantize`) and the
converter's versions. ``FRUITS_MODEL_CACHE`` moves the driver's cache (default
``~/.cache/fruits-pipeline/models``); ``off`` disables it. Files are written to a
temporary name and renamed, so concurrent jobs never read half a file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
from pathlib import Path

from fruits_spark import rules

CACHE_ENV = "FRUITS_MODEL_CACHE"
# what a dist may be installed as: the converter is TensorFlow whichever wheel brought it
_DIST_ALIASES = {"tensorflow-cpu": ("tensorflow-cpu", "tensorflow")}


def cache_dir() -> Path | None:
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() == "off":
        return None
    return Path(value) if value else Path.home() / ".cache" / "fruits-pipeline" / "models"


def converter_version() -> str:
    """The installed converter as ``keras==X tensorflow-cpu==Y`` (sorted): the same text
    ``fruits.storage.converted_models`` builds from constraints.txt's pins, so the driver's
    cache and the bucket name a conversion alike (a test keeps them equal)."""
    found = []
    for dist in rules.CONVERTER_DISTS:
        version = ""
        for name in _DIST_ALIASES.get(dist, (dist,)):
            try:
                version = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        found.append(f"{dist}=={version}")
    return " ".join(sorted(found))


def cache_key(model: str, image_size: int, weights_id: str, precision: str = rules.FP32) -> str:
    """The converted model's name for the installed converter (``weights_id``: the
    weights' sha256, or ``random``)."""
    return rules.converted_key(model, image_size, weights_id, converter_version(), precision)


def manifest_for(
    model: str, image_size: int, weights: str, weights_sha256: str, precision: str = rules.FP32
) -> dict:
    """What a converted file's ``<key>.json`` says made it (its own sha256 is added when
    it is stored). ``precision``: ``float32``, or the int8 scheme with its calibration set
    (the int8 fidelity is added by :func:`convert`)."""
    manifest = {
        "model": model,
        "image_size": int(image_size),
        "weights": weights,
        "weights_sha256": weights_sha256,
        "precision": rules.PRECISION if precision == rules.FP32 else precision,
        "converter": converter_version(),
    }
    if precision != rules.FP32:
        manifest |= {"scheme": rules.INT8_SCHEME, "calibration": rules.CALIBRATION_VERSION}
    return manifest


def manifest_precision(manifest: dict) -> str:
    """The run precision (``fp32`` or ``int8``) a manifest's file computes in."""
    made = manifest.get("precision", rules.PRECISION)
    return rules.FP32 if made == rules.PRECISION else made


def convert(
    model: str,
    image_size: int,
    weights: str,
    data: bytes | None,
    suffix: str,
    precision: str = rules.FP32,
):
    """``(tflite bytes, manifest)`` of ``model`` at ``image_size`` with the weights file's
    bytes ``data`` (named with ``suffix`` for Keras' loader), or the seeded random
    weights when ``data`` is None. Imports TensorFlow; raises if the weights do not fit.
    int8 (:mod:`.quantize`) also measures its fidelity to the float network, in the
    manifest."""
    from fruits_spark.inference import models, runtimes

    if data is None:
        data, suffix = models.random_weights_bytes(model, image_size), ".weights.h5"
    net = models.build_from_bytes(model, image_size, data, suffix)
    manifest = manifest_for(model, image_size, weights, models.sha256(data), precision)
    if precision == rules.FP32:
        return runtimes.to_litert(net), manifest
    from fruits_spark.inference import quantize

    content = quantize.to_int8(net, model, image_size)
    return content, {**manifest, "fidelity": quantize.fidelity(net, content, model, image_size)}


def check_manifest(
    manifest: dict, content: bytes, model: str, image_size: int, precision: str = rules.FP32
) -> str | None:
    """Why ``content`` with this manifest cannot be ``model`` at ``image_size`` and
    ``precision``, or None."""
    if hashlib.sha256(content).hexdigest() != manifest.get("sha256"):
        return "its sha256 is not the one its manifest names (a torn or replaced file)"
    made = (manifest.get("model"), manifest.get("image_size"))
    if made != (model, image_size):
        return f"it was converted for {made[0]}@{made[1]}, not {model}@{image_size}"
    if manifest_precision(manifest) != precision:
        return f"it computes in {manifest_precision(manifest)}, not the run's {precision}"
    return None


def load(key: str, folder: Path | None = None) -> tuple[bytes, dict] | None:
    """The cached model and its manifest, or None (no cache, a miss, or a broken entry)."""
    folder = folder if folder is not None else cache_dir()
    if folder is None:
        return None
    try:
        manifest = json.loads((folder / f"{key}.json").read_text())
        content = (folder / f"{key}.tflite").read_bytes()
    except (OSError, ValueError):
        return None
    if hashlib.sha256(content).hexdigest() != manifest.get("sha256"):
        return None
    return content, manifest


def with_sha256(content: bytes, manifest: dict) -> dict:
    return {**manifest, "sha256": hashlib.sha256(content).hexdigest()}


def store(key: str, content: bytes, manifest: dict, folder: Path | None = None) -> None:
    """Best effort: a cache that cannot be written costs the next run a conversion."""
    folder = folder if folder is not None else cache_dir()
    if folder is None:
        return
    manifest = with_sha256(content, manifest)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # the model first, the manifest (which names its sha256) last
        for name, data in ((f"{key}.tflite", content), (f"{key}.json", json.dumps(manifest))):
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data if isinstance(data, bytes) else data.encode())
            os.replace(tmp, folder / name)
    except OSError as exc:
        print(f"featurize: model cache {folder} not written: {exc}")


def cached_or_convert(
    model: str,
    image_size: int,
    weights: str,
    data: bytes | None,
    suffix: str,
    threads: int | None = None,
    precision: str = rules.FP32,
):
    """``(content, manifest, how)``: the cache's entry for these weights (``data``; None:
    random) at ``precision``, else a conversion on ``threads`` of TensorFlow's, stored.
    ``how``: ``cached`` or ``converted in N s``. A hit never imports TensorFlow."""
    import time

    from fruits_spark.inference import models

    key = cache_key(
        model,
        image_size,
        rules.RANDOM_WEIGHTS_ID if data is None else models.sha256(data),
        precision,
    )
    hit = load(key)
    if hit is not None:
        return hit[0], hit[1], "cached"
    start = time.perf_counter()
    if threads:
        models.configure_threads(threads)
    content, manifest = convert(model, image_size, weights, data, suffix, precision)
    store(key, content, manifest)
    return (
        content,
        with_sha256(content, manifest),
        f"converted in {time.perf_counter() - start:.1f} s",
    )
