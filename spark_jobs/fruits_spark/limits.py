"""The bounds of the run's numbers, in the one place every layer reads them.

The trigger form, the settings (``FRUITS_*``), the ``validate_params`` task and the jobs'
own arguments all check these values; each calls the functions here instead of
repeating the numbers, so a change reaches every layer at once. Standard library only:
the plugins import this module when a DAG is parsed.
"""

from __future__ import annotations

IMAGE_SIZE_DEFAULT = 224
IMAGE_SIZE_RANGE = (32, 1024)  # pixels a side: below 32 the CNNs' strides leave nothing
VARIANCE_DEFAULT = 0.95
VARIANCE_RANGE = (0.0, 1.0)  # a share of the variance: above the first, up to the second
BATCH_SIZE_DEFAULT = 64
BATCH_SIZE_RANGE = (1, 4096)
# A Python worker holds one Arrow batch of decoded images: its memory grows with it
# (tests/jobs/test_memory.py). 256 images of 224x224.
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
