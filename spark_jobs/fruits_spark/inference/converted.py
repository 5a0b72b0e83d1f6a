"""Converted models cached on the driver's disk, keyed by what made them.

Converting a network to ``.tflite`` takes TensorFlow's import, the network's build and
the converter: seconds to a minute, every time for the same result. The key is the
model, the image size, the weights' sha256 (or ``random``: seeded, so fixed by the
versions) and the versions of TensorFlow, Keras and the runtime; a change to any of
them is a new file. ``FRUITS_MODEL_CACHE`` moves the cache (default
``~/.cache/fruits-pipeline/models``); ``off`` disables it. Files are written to a
temporary name and renamed, so concurrent jobs never read half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from fruits_spark.inference import runtimes

CACHE_ENV = "FRUITS_MODEL_CACHE"


def cache_dir() -> Path | None:
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() == "off":
        return None
    return Path(value) if value else Path.home() / ".cache" / "fruits-pipeline" / "models"


def cache_key(model: str, image_size: int, weights_id: str, runtime: str) -> str:
    made_of = {
        "model": model,
        "image_size": image_size,
        "weights": weights_id,
        "runtime": runtime,
        **runtimes.versions(runtime),
    }
    digest = hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()
    return f"{model}-{image_size}-{runtime}-{digest[:24]}"


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


def store(key: str, content: bytes, manifest: dict, folder: Path | None = None) -> None:
    """Best effort: a cache that cannot be written costs the next run a conversion."""
    folder = folder if folder is not None else cache_dir()
    if folder is None:
        return
    manifest = {**manifest, "sha256": hashlib.sha256(content).hexdigest()}
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
