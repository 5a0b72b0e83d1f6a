"""Raw single-process inference: decode + preprocess + predict, one batch after the other.

    python -m bench.raw_keras --model mobilenetv2 --size 224 --input DIR --json OUT
        [--runtime keras|litert] [--batch 64] [--part 0/2] [--threads 0]
        [--save-features N] [--convert-only]

The same decoding (``images.decode_image``), preprocessing (``models.preprocess``),
network and seeded random weights as ``featurize.py --weights random``; ``keras`` runs
``predict_on_batch`` (plain Keras), ``litert`` the job's converted model in one LiteRT
interpreter (from the converted-model cache; ``--convert-only`` fills it and exits, so
the conversion is timed apart). The model build and a warm-up (both traces of
``predict_on_batch``; both interpreter sizes) are timed apart from the loop, whose rate is
a reference the Spark job is compared with. ``--part i/n`` takes the i-th of n contiguous
slices of the sorted file list, so a run can be split around another measurement.
``--threads 0``: TensorFlow's default pools (all cores), or LiteRT with every core.
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
    p.add_argument("--runtime", default="keras", choices=("keras", "litert"))
    p.add_argument("--convert-only", action="store_true", help="fill the model cache, exit")
    p.add_argument("--weights", default="random", choices=("random", "imagenet"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8"), help="litert only")
    args = p.parse_args(argv)
    if args.runtime == "litert":
        return run_litert(args, time.perf_counter())

    t_start = time.perf_counter()
    from fruits_spark.inference import models

    files = part_files(args)
    tf = models.import_tensorflow()  # as the job's workers import it (scikit-learn hidden)
    if args.threads:
        models.configure_threads(args.threads, 1)
    # seeded: the job's --weights random; or Keras' cached ImageNet file, as the job reads it
    weights = models.imagenet_weights_path(args.model) if args.weights == "imagenet" else None
    net = models.build_model(args.model, args.size, weights)
    t_built = time.perf_counter()
    # Warm-up, untimed: tf.function traces once for a full batch and once more
    # (relaxed shape) for a second batch size; the loop never retraces after this.
    for rows in (args.batch, max(1, args.batch - 1)):
        net.predict_on_batch(np.zeros((rows, args.size, args.size, 3), np.float32))
    t_warm = time.perf_counter()
    result = loop(args, files, net.predict_on_batch, t_start, t_built, t_warm)
    result.update(
        tf_intra_op=tf.config.threading.get_intra_op_parallelism_threads(),
        tf_inter_op=tf.config.threading.get_inter_op_parallelism_threads(),
    )
    return write(args, result)


def part_files(args: argparse.Namespace) -> list[Path]:
    """The ``--part i/n`` slice of the sorted image files."""
    from bench.data import image_files

    files = image_files(args.input)
    i, n = (int(x) for x in args.part.split("/"))
    return files[len(files) * i // n : len(files) * (i + 1) // n]


def run_litert(args: argparse.Namespace, t_start: float) -> int:
    """The job's converted model in one interpreter; TensorFlow only to convert (a miss)."""
    from fruits_spark.inference import driver_model, runtimes

    threads = args.threads or os.cpu_count() or 1
    t0 = time.perf_counter()
    prepared = driver_model.prepare(
        None, args.model, args.size, args.weights, "litert", threads, precision=args.precision
    )
    if args.convert_only:
        result = {"conversion": prepared.conversion, "convert_s": time.perf_counter() - t0}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        return 0
    files = part_files(args)
    forward = runtimes.LiteRTModel(prepared.payload, threads)
    t_built = time.perf_counter()
    for rows in (args.batch, max(1, args.batch - 1)):
        forward(np.zeros((rows, args.size, args.size, 3), np.float32))
    t_warm = time.perf_counter()
    result = loop(args, files, forward, t_start, t_built, t_warm)
    result.update(conversion=prepared.conversion, litert_threads=threads)
    return write(args, result)


def loop(args, files, forward, t_start: float, t_built: float, t_warm: float) -> dict:
    from fruits_spark.inference import models
    from fruits_spark.inference.images import decode_image

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
        out = np.asarray(forward(x), dtype=np.float32)
        e = time.perf_counter()
        read_s += b - a
        decode_s += c - b
        preprocess_s += d - c
        predict_s += e - d
        if len(saved) * args.batch < args.save_features:
            saved.append(out)
    loop_s = time.perf_counter() - t0
    loop_cpu_s = time.process_time() - cpu0

    return {
        "model": args.model,
        "size": args.size,
        "runtime": args.runtime,
        "batch": args.batch,
        "part": args.part,
        "images": len(files),
        "threads": args.threads or "default",
        "startup_s": t_built - t_start,
        "warmup_s": t_warm - t_built,
        "loop_s": loop_s,
        "loop_cpu_s": loop_cpu_s,
        "read_s": read_s,
        "decode_s": decode_s,
        "preprocess_s": preprocess_s,
        "predict_s": predict_s,
        "loadavg": os.getloadavg(),
        "saved": saved,
        "files": files,
    }


def write(args: argparse.Namespace, result: dict) -> int:
    saved = result.pop("saved")
    files = result.pop("files")
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
