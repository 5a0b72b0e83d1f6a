"""The fixed, versioned image sets an int8 conversion needs: what it calibrates on, and
the held-out crops its fidelity is measured on. Never the batch itself: an image's
features must not depend on the batch it came in.

Both are crops of real photographs bundled with scikit-image (pinned in constraints.txt,
installed where conversions run: requirements/convert.txt), so a conversion needs no
download and gives the same set on every machine. The two groups of source images are
disjoint: calibration never sees a photograph the fidelity is measured on.

A crop is a random square of 10-50% of the image's short side, at a random position,
flipped left-right half the time, resized to the model's input with Pillow's bilinear (as
featurize decodes); grayscale sources become RGB. Seeded: the same crops every time.
Changing any of that is a new :data:`VERSION` (``fruits_spark.rules.CALIBRATION_VERSION``,
part of a converted model's key).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fruits_spark.rules import CALIBRATION_VERSION as VERSION  # the set's name in keys

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["VERSION", "calibration_images", "crops"]
CALIBRATION_SOURCES = ("motorcycle_left", "motorcycle_right", "cell", "clock", "page", "text")
HELD_OUT_SOURCES = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket",
)  # fmt: skip
CALIBRATION_IMAGES = 200
CALIBRATION_SEED = 1
SCALE = (0.1, 0.5)  # of the source's short side


def _loaders() -> dict[str, Callable[[], np.ndarray]]:
    import skimage.data as data

    loaders: dict[str, Callable[[], np.ndarray]] = {
        name: getattr(data, name) for name in HELD_OUT_SOURCES + CALIBRATION_SOURCES[2:]
    }
    loaders["motorcycle_left"] = lambda: data.stereo_motorcycle()[0]
    loaders["motorcycle_right"] = lambda: data.stereo_motorcycle()[1]
    return loaders


def source_image(name: str) -> Image.Image:
    """One bundled sample image, as RGB."""
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.asarray(_loaders()[name]())).convert("RGB")


def crop(img: Image.Image, size: int, rng: random.Random) -> np.ndarray:
    """One random square crop of ``img`` (see the module's docstring), uint8 HxWx3."""
    import numpy as np
    from PIL import Image

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
    """``(images uint8 NxSxSx3, labels)``: ``per_source`` crops of each source, in order,
    labelled by the source's index."""
    import numpy as np

    rng = random.Random(seed)
    images, labels = [], []
    for label, name in enumerate(sources):
        img = source_image(name)
        for _ in range(per_source):
            images.append(crop(img, size, rng))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def calibration_images(size: int, n: int = CALIBRATION_IMAGES) -> np.ndarray:
    """The ``n`` calibration crops (uint8), spread evenly over the calibration sources."""
    per_source = -(-n // len(CALIBRATION_SOURCES))
    images, _ = crops(CALIBRATION_SOURCES, per_source, size, CALIBRATION_SEED)
    return images[:n]
