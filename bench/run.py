"""Performance, side by side in one run: the Spark jobs against what the model allows.

    python -m bench.run                      # make bench: featurize (MobileNetV2, VGG16 @224),
                                             # featurize of 1k, 4k, 16k images (a linear fit),
                                             # reduce (20,000 x 1280)
    python -m bench.run --quick              # MobileNetV2 only, fewer images, smaller PCA
    python -m bench.run --no-scaling         # without the 1k, 4k, 16k images fit
    python -m bench.run --models vgg16 --sizes 100 --images 2000 --no-reduce

Featurize: (a) raw single-process Keras (``bench.raw_keras``: decode, preprocess,
predict_on_batch, batch 64, same network, size and seeded weights as the job's
``--weights random``) against (b) ``spark_jobs/featurize.py`` run by ``spark-submit
--master local[*]`` (``bench/spark_driver.py`` times ``featurize.run`` on the started
session, so JVM start-up is measured and reported apart). Raw Keras runs in two halves,
one before and one after the job, so drifting load on a shared machine hits both sides.
Each job run records per-batch timings in every Python worker
(``FRUITS_INFERENCE_PROFILE``), which gives the steady-state rate (images / time from
the first batch to the last) and where a task's time goes.

Reduce: (c) ``spark_jobs/reduce.py`` (``reduce``'s run on the started session) against
(d) ``sklearn.decomposition.PCA(n_components=0.95)`` fit + transform of the same matrix,
the features the featurize job wrote for 20,000 images (MobileNetV2@64, 1280 features).

Prints a table and writes ``bench/results.json``; everything is a ratio within one run.
This module parses the options and runs the measurements in order: ``bench.measure_featurize``
and ``bench.measure_reduce`` (the jobs, through ``bench.launch``, against
``bench.baselines``), then ``bench.report``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from bench.data import ROOT
from bench.launch import MODEL_CACHE
from bench.measure_featurize import DEFAULT_IMAGES, VARIANTS, bench_featurize, bench_scaling
from bench.measure_reduce import bench_reduce
from bench.report import machine, table

QUICK_IMAGES = 600
SCALING_POINTS = (1000, 4000, 16000)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="mobilenetv2,vgg16")
    p.add_argument("--sizes", default="224", help="image sizes, comma separated")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    started = time.time()
    # every run converts its models once, timed (bench.baselines.convert), then reuses them
    shutil.rmtree(MODEL_CACHE, ignore_errors=True)
    if not args.no_featurize:
        results["featurize"] = [
            row
            for model in args.models.split(",")
            for size in args.sizes.split(",")
            for row in bench_featurize(model, int(size), args)
        ]
    if args.scaling:
        sc = results["scaling"] = bench_scaling(args)
        raw = [r["raw"]["rate"] for r in results.get("featurize", [])
               if (r["model"], r["size"]) == (sc["model"], sc["size"])]  # fmt: skip
        if raw:
            sc["ratio_marginal"] = sc["fit"]["marginal_rate"] / raw[0]
    if not args.no_reduce:
        results["reduce"] = bench_reduce(args)
    if args.progress_cost and not args.no_featurize:
        from bench.launch import log
        from bench.measure_progress import bench_progress, line

        results["progress_cost"] = bench_progress(args)
        log(line(results["progress_cost"]))
    results["wall_s"] = time.time() - started
    results["table"] = table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str))
    print(results["table"])
    print(f"\nwrote {args.json} ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
