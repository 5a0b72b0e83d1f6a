"""The options of ``python -m bench.scale`` (``make bench-scale``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.scale.pipeline import ROOT

SIZES = (10_000, 30_000, 90_000)


def sizes(text: str) -> list[int]:
    """``10000,30000`` -> [10000, 30000]: sorted, each once, each at least 1."""
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of sizes: {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"sizes must be whole numbers above 0: {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description="The DAG end to end on the local backend at Fruits-360 sizes "
        "(make bench-scale).",
    )
    p.add_argument(
        "--sizes",
        type=sizes,
        default=list(SIZES),
        help="good images per batch, comma separated (default 10000,30000,90000)",
    )
    p.add_argument("--image-size", type=int, default=224, help="FRUITS_IMAGE_SIZE (224)")
    p.add_argument("--model", default="mobilenet", help="FRUITS_MODEL (mobilenet, as make demo)")
    p.add_argument("--weights", default="imagenet", help="FRUITS_WEIGHTS (imagenet)")
    p.add_argument(
        "--backfill-days",
        type=int,
        default=3,
        help="small daily batches run one after the other (30 for the full figure)",
    )
    p.add_argument("--backfill-images", type=int, default=1000, help="images per daily batch")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=ROOT / "var" / "bench-scale",
        help="batches, Airflow's home, scratch and logs (var/bench-scale)",
    )
    p.add_argument("--bucket", default="fruits-bench-scale", help="FRUITS_BUCKET")
    p.add_argument("--seed", type=int, default=0, help="the drawing's seed")
    p.add_argument("--workers", type=int, default=2, help="processes drawing the batches")
    p.add_argument("--no-runs", action="store_true", help="only write the batches")
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="skip the small unmeasured run first (model conversion, cold caches)",
    )
    p.add_argument(
        "--keep-objects",
        action="store_true",
        help="keep each batch's objects in moto until the end (moto's memory "
        "then grows with every batch); by default they go once checked",
    )
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "scale-results.json")
    args = p.parse_args(argv)
    if args.backfill_days < 0 or args.backfill_images < 1:
        p.error("--backfill-days must be 0 or more, --backfill-images 1 or more")
    args.work_dir = args.work_dir if args.work_dir.is_absolute() else Path.cwd() / args.work_dir
    return args
