"""Raw single-process Keras: decode + preprocess + predict, one batch after the other.

    python -m bench.raw_keras --model mobilenetv2 --size 224 --input DIR --json OUT
        [--batch 64] [--part 0/2] [--threads 0] [--save-features N]

The same decoding (``images.decode_image``), preprocessing (``models.preprocess``),
network and seeded random weights as ``featurize.py --weights random``. The model build
and a warm-up (both traces of ``predict_on_batch``) are timed apart from the loop, whose
rate is the reference the Spark job is compared with. ``--part i/n`` takes the i-th of
n contiguous slices of the sorted file list, so a run can be split around another
measurement. ``--threads 0`` leaves TensorFlow's thread pools at their defaults (all cores).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--part", default="0/1", help="i/n: the i-th of n contiguous slices")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: TF default")
    p.add_argument("--save-features", type=int, default=0, help="keep the first N vectors")
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    from bench.data import image_files
    from fruits_spark import models
    from fruits_spark.images import decode_image

    files = image_files(args.input)
    i, n = (int(x) for x in args.part.split("/"))
    files = files[len(files) * i // n : len(files) * (i + 1) // n]

    tf = models.import_tensorflow()  # as the job's workers import it (scikit-learn hidden)
    if args.threads:
        models.configure_threads(args.threads, 1)
    net = models.build_model(args.model, args.size)  # seeded: the job's --weights random
    t_built = time.perf_counter()
    # Warm-up, untimed: tf.function traces once for a full batch and once more
    # (relaxed shape) for a second batch size; the loop never retraces after this.
    for rows in (args.batch, max(1, args.batch - 1)):
        net.predict_on_batch(np.zeros((rows, args.size, args.size, 3), np.float32))
    t_warm = time.perf_counter()

    read_s = decode_s = preprocess_s = predict_s = 0.0
    saved: list[np.ndarray] = []
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for start in range(0, len(files), args.batch):
        chunk = files[start : start + args.batch]
        a = time.perf_counter()
        contents = [f.read_bytes() for f in chunk]
        b = time.perf_counter()
        arrays = np.stack([decode_image(c, args.size) for c in contents])
        c = time.perf_counter()
        x = models.preprocess(args.model, arrays)
        d = time.perf_counter()
        out = np.asarray(net.predict_on_batch(x), dtype=np.float32)
        e = time.perf_counter()
        read_s += b - a
        decode_s += c - b
        preprocess_s += d - c
        predict_s += e - d
        if len(saved) * args.batch < args.save_features:
            saved.append(out)
    loop_s = time.perf_counter() - t0
    loop_cpu_s = time.process_time() - cpu0

    result = {
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "part": args.part,
        "images": len(files),
        "threads": args.threads or "tf-default",
        "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "startup_s": t_built - t_start,
        "warmup_s": t_warm - t_built,
        "loop_s": loop_s,
        "loop_cpu_s": loop_cpu_s,
        "read_s": read_s,
        "decode_s": decode_s,
        "preprocess_s": preprocess_s,
        "predict_s": predict_s,
        "loadavg": os.getloadavg(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    if args.save_features:
        features = np.concatenate(saved)[: args.save_features]
        np.savez(
            args.json.with_suffix(".npz"),
            paths=np.array([str(f) for f in files[: len(features)]]),
            features=features,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
