"""The CPU runtimes considered for featurize, side by side in one process.

    pip install onnxruntime tf2onnx openvino   # not in the requirements: this script only
    python -m bench.runtime_candidates mobilenetv2 224 keras,litert,onnx,openvino

Same network (seeded random weights), same preprocessed batch of 32, two threads each;
prints images/s over three alternating rounds, the conversion time and the largest
difference from Keras relative to the features' scale. How LiteRT was picked:
docs/performance.md, "Choosing the runtime".
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

THREADS, BATCH = 2, 32


def main(argv: list[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fruits_spark.inference import models

    model, size, which = argv[0], int(argv[1]), argv[2].split(",")
    tf = models.import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    net = models.build_model(model, size)
    rng = np.random.default_rng(0)
    x = models.preprocess(model, rng.integers(0, 256, (BATCH, size, size, 3)))
    spec = tf.TensorSpec([None, size, size, 3], tf.float32)
    forward = tf.function(lambda a: net(a, training=False), input_signature=[spec])
    reference = forward(x).numpy()
    runners, convert_s = {}, {}
    if "keras" in which:
        runners["keras"] = lambda: forward(x).numpy()
    if "litert" in which:
        from fruits_spark.inference import runtimes

        t = time.time()
        lite = runtimes.LiteRTModel(runtimes.to_litert(net), THREADS)
        convert_s["litert"] = time.time() - t
        runners["litert"] = lambda: lite(x)
    if "onnx" in which:
        import onnxruntime as ort
        import tf2onnx

        t = time.time()
        proto, _ = tf2onnx.convert.from_function(
            tf.function(lambda a: net(a, training=False)),
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="x")],
            opset=17,
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
        session = ort.InferenceSession(proto.SerializeToString(), options)
        convert_s["onnx"] = time.time() - t
        name = session.get_inputs()[0].name
        runners["onnx"] = lambda: session.run(None, {name: x})[0]
    if "openvino" in which:
        import openvino as ov

        t = time.time()
        compiled = ov.Core().compile_model(
            ov.convert_model(net, input=[(BATCH, size, size, 3)]), "CPU",
            {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY"},
        )  # fmt: skip
        convert_s["openvino"] = time.time() - t
        request = compiled.create_infer_request()
        runners["openvino"] = lambda: next(iter(request.infer({0: x}).values()))
    scale = float(np.abs(reference).max())
    diff = {k: float(np.abs(np.asarray(f()) - reference).max() / scale) for k, f in runners.items()}
    rates: dict[str, list[float]] = {k: [] for k in runners}
    repeats = 4 if model == "vgg16" else 8
    for _ in range(3):
        for k, f in runners.items():
            t = time.perf_counter()
            for _ in range(repeats):
                f()
            rates[k].append(repeats * BATCH / (time.perf_counter() - t))
    for k in runners:
        print(json.dumps({"model": model, "size": size, "runtime": k,
                          "img_s": [round(r, 1) for r in rates[k]],
                          "max_diff_at_scale": diff[k],
                          "convert_s": round(convert_s.get(k, 0.0), 1)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
