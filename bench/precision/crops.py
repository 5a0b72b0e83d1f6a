"""The evaluation crops of bench.precision.study: real photographs, labelled by source image.

They are :mod:`fruits_spark.inference.calibration`'s crops of its held-out sources (13
scikit-image sample photographs, never calibrated on); calibration uses the other group.
"""

from __future__ import annotations

from fruits_spark.inference.calibration import (
    CALIBRATION_SOURCES,
    HELD_OUT_SOURCES,
    calibration_images,
    crops,
)

EVAL_SOURCES = HELD_OUT_SOURCES
EVAL_SEED = 0

__all__ = ["CALIBRATION_SOURCES", "EVAL_SEED", "EVAL_SOURCES", "calibration_images", "crops"]
