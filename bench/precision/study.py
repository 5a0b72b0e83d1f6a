"""int8 features against fp32, method by method: fidelity as users judge features, and speed.

    python -m bench.precision.study                         # every method, 160 crops a source
    python -m bench.precision.study --per-source 20 --methods fp32,int8   # quick look

MobileNet v1 @224 with the ImageNet weights of ``make weights`` (random weights give
features of ~1e-11, which int8 rounds to zero), no top, average pooled (the product's
network). Each method converts that network with TensorFlow's ``TFLiteConverter`` and
calibrates on :data:`bench.precision.crops.CALIBRATION_SOURCES` crops (never an evaluated
image); then, against the fp32 ``.tflite``:

- cosine of each image's pooled features to fp32's (mean, 1st percentile);
- leave-one-out 1-NN label accuracy (cosine distance) and silhouette (cosine), fp32 and the
  method, on two sets: ``crops`` (real photographs, :data:`bench.precision.crops.EVAL_SOURCES`,
  labelled by source) and ``fruits`` (the repo's synthetic sample batch, bench.data);
- top-1 agreement with fp32 of ImageNet's classifier (MobileNet's own ``conv_preds``,
  float) applied to each method's pooled features, on the crops;
- steady img/s: LiteRT, 2 threads, batch 32, the methods in alternating rounds in this one
  process (ratios to fp32 mean something; absolute rates move with the shared host).

Writes ``var/int8_study/results.json`` and prints a Markdown table (docs/precision.md).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.precision import crops as int8_crops

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "var" / "int8_study"
MODEL, SIZE, THREADS, BATCH = "mobilenet", 224, 2, 32


def converter(net, calibration: np.ndarray):
    import tensorflow as tf

    c = tf.lite.TFLiteConverter.from_keras_model(net)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([x[None]] for x in calibration)
    return c


def convert(method: str, net, calibration: np.ndarray) -> bytes:
    """The ``.tflite`` of ``method`` (see METHODS)."""
    import tensorflow as tf

    if method == "fp32":
        return tf.lite.TFLiteConverter.from_keras_model(net).convert()
    if method == "dynamic":
        c = tf.lite.TFLiteConverter.from_keras_model(net)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        return c.convert()
    c = converter(net, calibration)
    if method == "int16x8":
        c.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        return c.convert()
    if method == "int8-per-tensor":
        c._experimental_disable_per_channel = True
        return c.convert()
    if method == "int8":
        return c.convert()
    # selective: the named layers (and the pooling) stay float
    layers = method.split(":", 1)[1].split("+") if ":" in method else []
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=c,
        debug_dataset=lambda: ([x[None]] for x in calibration[:4]),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=["MEAN"], denylisted_nodes=layer_outputs(c, layers) or None
        ),
    )
    return debugger.get_nondebug_quantized_model()


def layer_outputs(c, layers: list[str]) -> list[str]:
    """What ``denylisted_nodes`` names for the Keras ``layers`` (the product's lookup)."""
    from fruits_spark.inference.quantize import layer_outputs as outputs

    return outputs(c.convert(), tuple(layers)) if layers else []


METHODS = {
    "fp32": "float32 (the product today)",
    "dynamic": "dynamic range: int8 weights, float activations",
    "int8": "full int8, per-channel weights",
    "int8-per-tensor": "full int8, per-tensor weights",
    "int8-float-head": "int8, average pooling in float",
    "int8-float:conv1": "int8, first conv and pooling in float",
    "int8-float:conv_dw_1+conv_pw_1+conv_pw_13": "int8, the 3 worst layers and pooling in float",
    "int16x8": "int16 activations, int8 weights",
}


def runner(content: bytes) -> Callable[[np.ndarray], np.ndarray]:
    from fruits_spark.inference.runtimes import LiteRTModel

    return LiteRTModel(content, THREADS)


def float_ops(run) -> list[str]:
    """The ops of the model that compute in float32 (besides (de)quantizing)."""
    interp = run._interpreter
    types = {d["index"]: d["dtype"].__name__ for d in interp.get_tensor_details()}
    return [
        op["op_name"]
        for op in interp._get_ops_details()
        if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")
        and types.get(op["outputs"][0]) == "float32"
    ]


def features(run, x: np.ndarray) -> np.ndarray:
    return np.concatenate([run(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])


def imagenet_head() -> tuple[np.ndarray, np.ndarray]:
    """MobileNet v1's classifier (``conv_preds``: 1024 -> 1000) from Keras' cached
    with-top file, as numpy (weight, bias)."""
    import h5py

    from fruits_spark.inference.models import keras_cache_dir

    with h5py.File(keras_cache_dir() / "mobilenet_1_0_224_tf.h5", "r") as h5:
        group = h5["conv_preds"]["conv_preds"]
        kernel = np.asarray(group["kernel"])
        bias = np.asarray(group["bias"])
    return kernel.reshape(-1, kernel.shape[-1]), bias


def fruits_set(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic sample batch (bench.data) decoded as featurize decodes."""
    from bench.data import image_batch, image_files
    from fruits_spark.inference.images import decode_image, label_from_path

    files = image_files(image_batch(n, seed=1))
    names = sorted({label_from_path(str(p)) for p in files})
    x = np.stack([decode_image(p.read_bytes(), SIZE) for p in files])
    y = np.asarray([names.index(label_from_path(str(p))) for p in files])
    return x, y


def speed(runs: dict[str, Callable], x: np.ndarray, rounds: int, batches: int) -> dict:
    """Steady img/s of each runner over ``rounds`` alternating rounds of ``batches``."""
    for run in runs.values():
        run(x)  # warm-up (allocation)
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for k, run in runs.items():
            t = time.perf_counter()
            for _ in range(batches):
                run(x)
            rates[k].append(batches * len(x) / (time.perf_counter() - t))
    return rates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--per-source", type=int, default=160, help="evaluation crops a source")
    p.add_argument("--calibration", type=int, default=200, help="calibration crops in all")
    p.add_argument("--fruits", type=int, default=600, help="synthetic fruit images")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=int, default=4, help="batches of 32 per speed round")
    p.add_argument("--json", type=Path, default=OUT / "results.json")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fruits_spark.inference import models
    from fruits_spark.inference.quantize import cosine
    from fruits_spark.pca import separation

    tf = models.import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    methods = args.methods.split(",")
    if "fp32" not in methods:
        methods.insert(0, "fp32")
    calibration = models.preprocess(MODEL, int8_crops.calibration_images(SIZE, args.calibration))
    sets = {
        "crops": int8_crops.crops(
            int8_crops.EVAL_SOURCES, args.per_source, SIZE, int8_crops.EVAL_SEED
        )
    }
    if args.fruits:
        sets["fruits"] = fruits_set(args.fruits)
    print({k: len(v[1]) for k, v in sets.items()}, "calibration", len(calibration), flush=True)
    net = models.build_model(MODEL, SIZE, models.imagenet_weights_path(MODEL))
    kernel, bias = imagenet_head()
    runs, convert_s = {}, {}
    for m in methods:
        t = time.perf_counter()
        content = convert(m, net, calibration)
        convert_s[m] = time.perf_counter() - t
        (OUT / f"{m}.tflite").parent.mkdir(parents=True, exist_ok=True)
        (OUT / f"{m}.tflite").write_bytes(content)
        runs[m] = runner(content)
        print(f"{m}: converted in {convert_s[m]:.1f} s, {len(content) / 1e6:.1f} MB", flush=True)
    feats = {
        m: {s: features(run, models.preprocess(MODEL, x)) for s, (x, _) in sets.items()}
        for m, run in runs.items()
    }
    x_speed = models.preprocess(MODEL, sets["crops"][0][:BATCH])
    rates = speed(runs, x_speed, args.rounds, args.batches)
    results = {"sets": {k: len(v[1]) for k, v in sets.items()}, "methods": {}}
    ref = feats["fp32"]
    top_ref = (ref["crops"] @ kernel + bias).argmax(1)
    for m in methods:
        f = feats[m]
        cos = cosine(f["crops"], ref["crops"])
        row = {
            "what": METHODS.get(m, f"int8, float: {m.partition(':')[2]} and pooling"),
            "float_ops": float_ops(runs[m]),
            "convert_s": convert_s[m],
            "img_s": rates[m],
            "speed_ratio": float(np.median(rates[m]) / np.median(rates["fp32"])),
            "cosine_mean": float(cos.mean()),
            "cosine_p1": float(np.percentile(cos, 1)),
            "top1_agreement": float(((f["crops"] @ kernel + bias).argmax(1) == top_ref).mean()),
        }
        for s, (_, y) in sets.items():
            row[f"nn1_{s}"] = separation.nn1_accuracy(f[s], y, "cosine")
            row[f"silhouette_{s}"] = separation.silhouette(f[s], y, "cosine")
            if s != "crops":
                c = cosine(f[s], ref[s])
                row[f"cosine_mean_{s}"] = float(c.mean())
        results["methods"][m] = row
        print(m, json.dumps({k: v for k, v in row.items() if k != "what"}), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


def table(results: dict) -> str:
    sets = list(results["sets"])
    fp = results["methods"]["fp32"]
    head = ["method", "img/s vs fp32", "cosine mean / p1"]
    head += [f"1-NN {s} (fp32 {fp['nn1_' + s] * 100:.1f})" for s in sets]
    head += [f"silhouette {s}" for s in sets] + ["top-1 agreement"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, r in results["methods"].items():
        cells = [m, f"{r['speed_ratio']:.2f}x", f"{r['cosine_mean']:.3f} / {r['cosine_p1']:.3f}"]
        cells += [f"{r['nn1_' + s] * 100:.1f}" for s in sets]
        cells += [f"{r['silhouette_' + s]:.3f}" for s in sets]
        cells += [f"{r['top1_agreement'] * 100:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
