"""featurize's driver steps before its Spark job, A/B in one session: the input listed as
``featurize.list_images`` does (images, then every file for the count of skipped ones,
one after the other) against both file indexes built at once (tried, not kept:
docs/performance.md), alternated round by round; and the broadcast of the converted
model, which ``featurize.run`` makes beside the listing.

    spark-submit --master 'local[*]' bench/measure_listing.py FOLDER [ROUNDS] [MODEL_FILE]

``BENCH_LISTING_FIRST=concurrent`` starts with the concurrent listing (default sequential):
run it both ways, each in a fresh process, to compare the cold first listings.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def sequential(spark, featurize, fsio, input_uri: str):
    """The listing as shipped: the two file indexes built one after the other."""
    listing = featurize.list_images(spark, input_uri)
    return len(listing.paths), listing.skipped


def concurrent(spark, featurize, fsio, input_uri: str):
    """The count of every file listed in a second thread, beside the images' listing."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        everything = pool.submit(
            lambda: fsio.count_input_files(featurize.image_files(spark, input_uri, False))
        )
        images = featurize.image_files(spark, input_uri)
        paths = [fsio.as_spark_path(uri) for uri in fsio.input_files(images)]
        return len(paths), everything.result() - len(paths)


def main(argv: list[str]) -> int:
    folder, rounds = argv[0], int(argv[1]) if len(argv) > 1 else 4
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName("bench-listing").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    import featurize

    from fruits_spark.io import fsio

    times: dict[str, list[float]] = {"sequential": [], "concurrent": []}
    first = os.environ.get("BENCH_LISTING_FIRST", "sequential")
    names = ("sequential", "concurrent") if first == "sequential" else ("concurrent", "sequential")
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            fn = sequential if name == "sequential" else concurrent
            start = time.perf_counter()
            counts = fn(spark, featurize, fsio, folder)
            times[name].append(time.perf_counter() - start)
            print(f"round {r + 1} {name}: {times[name][-1]:.2f} s {counts}", flush=True)
    for name, ts in times.items():
        print(f"{name}: median {statistics.median(ts):.2f} s, all {[round(t, 2) for t in ts]}")
    if len(argv) > 2:
        payload = Path(argv[2]).read_bytes()
        spent = []
        for _ in range(3):
            start = time.perf_counter()
            bc = spark.sparkContext.broadcast(payload)
            spent.append(time.perf_counter() - start)
            bc.unpersist()
        print(f"broadcast of {len(payload) / 1e6:.1f} MB: {[round(t, 2) for t in spent]} s")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
