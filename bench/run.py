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
This module runs the measurements in order: ``bench.measure_featurize``
and ``bench.measure_reduce`` (the jobs, through ``bench.launch``, against
``bench.baselines``), then ``bench.report``; ``bench.options`` parses the options.
"""

from __future__ import annotations

import json
import shutil
import time

from bench.launch import MODEL_CACHE
from bench.measure_featurize import bench_featurize, bench_scaling
from bench.measure_reduce import bench_reduce
from bench.options import parse_args
from bench.report import machine, table


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
