"""Labelled crops of real photographs, offline: scikit-image's bundled sample images.

Two disjoint groups of source images, so calibration never sees an evaluated image:

- :data:`EVAL_SOURCES` (13 photographs): the evaluation set, labelled by source image;
- :data:`CALIBRATION_SOURCES` (6 others): what an int8 conversion calibrates on.

A crop is a random square of 25-75% of the image's short side, at a random position,
flipped left-right half the time, resized to the model's input with Pillow's bilinear
(as featurize decodes); grayscale sources become RGB. Seeded: the same crops every run.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

EVAL_SOURCES = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket",
)  # fmt: skip
CALIBRATION_SOURCES = ("motorcycle_left", "motorcycle_right", "cell", "clock", "page", "text")
SCALE = (0.25, 0.75)


def _loaders() -> dict[str, Callable[[], np.ndarray]]:
    import skimage.data as data

    loaders: dict[str, Callable[[], np.ndarray]] = {
        name: getattr(data, name) for name in EVAL_SOURCES + CALIBRATION_SOURCES[2:]
    }
    loaders["motorcycle_left"] = lambda: data.stereo_motorcycle()[0]
    loaders["motorcycle_right"] = lambda: data.stereo_motorcycle()[1]
    return loaders


def source_image(name: str) -> Image.Image:
    """One bundled sample image as RGB."""
    return Image.fromarray(np.asarray(_loaders()[name]())).convert("RGB")


def crop(img: Image.Image, size: int, rng: random.Random) -> np.ndarray:
    """One random square crop of ``img`` (see the module's docstring), uint8 HxWx3."""
    w, h = img.size
    side = int(min(w, h) * rng.uniform(*SCALE))
    left, top = rng.randint(0, w - side), rng.randint(0, h - side)
    out = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(out, dtype=np.uint8)


def crops(
    sources: Sequence[str], per_source: int, size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 NxSxSx3, labels)``: ``per_source`` crops of each source, in order."""
    rng = random.Random(seed)
    images, labels = [], []
    for label, name in enumerate(sources):
        img = source_image(name)
        for _ in range(per_source):
            images.append(crop(img, size, rng))
            labels.append(label)
    return np.stack(images), np.asarray(labels)
