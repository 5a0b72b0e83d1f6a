"""The options of ``python -m bench.run`` (``make bench``), which the single measurements
(``python -m bench.measure_progress``) take too."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.data import ROOT
from bench.measure_featurize import DEFAULT_IMAGES, VARIANTS

QUICK_IMAGES = 600
SCALING_POINTS = (1000, 4000, 16000)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Performance, side by side in one run (make bench).")
    p.add_argument("--models", default="mobilenetv2,vgg16")
    p.add_argument("--sizes", default="224", help="image sizes, comma separated")
    p.add_argument("--weights", default="random", choices=("random", "imagenet"),
                   help="imagenet: Keras' cached files (mobilenet: `make weights`); the int8 "
                        "variant needs them (random weights' features round to zero)")  # fmt: skip
    p.add_argument("--images", type=int, default=None,
                   help=f"images per featurize measurement (default {DEFAULT_IMAGES} at 224, "
                        "scaled by (224/size)^2)")  # fmt: skip
    quick = f"MobileNetV2 only, {QUICK_IMAGES} images, reduce on 5,000 rows"
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--no-scaling", dest="scaling", action="store_false",
                   help="skip featurize cost against image count (1k, 4k, 16k images)")  # fmt: skip
    p.add_argument("--scaling-points", default=",".join(map(str, SCALING_POINTS)))
    p.add_argument("--scaling-model", default="mobilenetv2")
    p.add_argument("--scaling-size", type=int, default=224)
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"featurize job configurations to run: {VARIANTS}")  # fmt: skip
    p.add_argument("--scaling-variant", default="shipped", choices=sorted(VARIANTS))
    p.add_argument("--reduce-rows", type=int, default=20_000)
    p.add_argument("--sklearn-repeats", type=int, default=3)
    p.add_argument("--no-featurize", action="store_true")
    p.add_argument("--no-reduce", action="store_true")
    p.add_argument("--no-progress-cost", dest="progress_cost", action="store_false",
                   help="skip featurize with live progress vs without (issue 16)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=None, help="featurize --batch-size")
    p.add_argument("--tf-threads", type=int, default=None, help="featurize --tf-threads")
    p.add_argument("--conf", action="append", default=[], help="extra spark-submit conf k=v")
    p.add_argument("--env", action="append", default=[], help="extra job environment K=V")
    p.add_argument("--master", default="local[*]")
    p.add_argument("--driver-memory", default="4g")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    args = p.parse_args(argv)
    if args.quick:
        args.models = "mobilenetv2"
        args.scaling = False
        args.images = args.images or QUICK_IMAGES
        args.reduce_rows = min(args.reduce_rows, 5000)
    return args
