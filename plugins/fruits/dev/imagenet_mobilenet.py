"""Real ImageNet weights for MobileNet v1 with no internet: ``make weights``.

Keras downloads its ImageNet weights from a host this machine (and an air-gapped
cluster) cannot reach. The PyPI package ``nudity`` 0.2.3 (MIT) ships, inside its sdist,
``nudity/files/retrained_graph.pb``: a frozen TensorFlow 1 GraphDef of the TF-slim
MobileNet v1 1.0/224 trained on ImageNet -- batch-norm constants and the original
1001-class logits layer included; the package only added a two-class layer on top.
This module fetches that exact sdist with pip (no install, no dependencies), checks
both sha256s, maps the graph's constants onto ``keras.applications.MobileNet``
(``conv1``/``conv1_bn`` <- ``Conv2d_0``; ``conv_dw_i``/``conv_pw_i`` and their ``_bn``
<- ``Conv2d_i_depthwise``/``Conv2d_i_pointwise``; ``conv_preds`` <- the logits without
the background class 0) and writes Keras' own cache files, so that
``weights="imagenet"`` loads offline:

    python -m fruits.dev.imagenet_mobilenet [--keras-home DIR] [--work DIR]

It also keeps the frozen graph (``<work>/mobilenet_v1_1.0_224_frozen.pb``), which the
tests run with ``tf.compat.v1`` to check the conversion.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from fruits.settings import PROJECT_ROOT

SDIST = "nudity-0.2.3.tar.gz"
SDIST_SHA256 = "d26e10346f00ad76b1166a221f1b56877d154ca343e82c6e6c8e738ca5f27d5f"
GRAPH_MEMBER = "nudity-0.2.3/nudity/files/retrained_graph.pb"
GRAPH_SHA256 = "3b90af536f810f5f75e9f6d431bc2e8a3c4fc2ff4f693aa0dd4ae429816f8735"
GRAPH_FILE = "mobilenet_v1_1.0_224_frozen.pb"
NO_TOP_FILE = "mobilenet_1_0_224_tf_no_top.h5"  # the names Keras caches them under
FULL_FILE = "mobilenet_1_0_224_tf.h5"
WORK_DIR = PROJECT_ROOT / "var" / "weights"
# the frozen graph's tensors: input 1x224x224x3 in [-1, 1]; pooled features; logits
# (index 0 = background)
GRAPH_INPUT = "input:0"
GRAPH_POOLED = "MobilenetV1/Logits/AvgPool_1a/AvgPool:0"
GRAPH_LOGITS = "MobilenetV1/Logits/SpatialSqueeze:0"
BLOCKS = 13


class WeightsError(RuntimeError):
    """The sdist could not be fetched, or a checksum does not match: nothing written."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_sdist(work: Path) -> Path:
    """``<work>/nudity-0.2.3.tar.gz``, downloaded by pip unless a checked copy is there."""
    path = work / SDIST
    if path.is_file() and sha256_file(path) == SDIST_SHA256:
        return path
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", "nudity==0.2.3", "-d", tmp],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        got = Path(tmp) / SDIST
        if done.returncode != 0 or not got.is_file():
            lines = [ln for ln in done.stderr.splitlines() if "is ignored" not in ln]
            raise WeightsError(
                "could not download nudity==0.2.3 (the sdist that ships the MobileNet "
                "graph) with pip: " + ("\n".join(lines[-5:]) or f"exit status {done.returncode}")
            )
        if sha256_file(got) != SDIST_SHA256:
            raise WeightsError(f"{SDIST}: sha256 {sha256_file(got)}, expected {SDIST_SHA256}")
        os.replace(got, path)
    return path


def extract_graph(sdist: Path, work: Path) -> Path:
    """The frozen graph out of the sdist, checked, as ``<work>/<GRAPH_FILE>``."""
    out = work / GRAPH_FILE
    if out.is_file() and sha256_file(out) == GRAPH_SHA256:
        return out
    with tarfile.open(sdist) as tar:
        member = tar.extractfile(GRAPH_MEMBER)
        if member is None:
            raise WeightsError(f"{sdist} has no {GRAPH_MEMBER}")
        data = member.read()
    if hashlib.sha256(data).hexdigest() != GRAPH_SHA256:
        raise WeightsError(f"{GRAPH_MEMBER}: sha256 does not match {GRAPH_SHA256}")
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out


def load_graph_def(graph: Path) -> Any:
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph.read_bytes())
    return graph_def


def graph_constants(graph_def: Any) -> dict[str, Any]:
    """Every Const node of the graph as a numpy array, by node name."""
    import tensorflow as tf

    return {
        node.name: tf.make_ndarray(node.attr["value"].tensor)
        for node in graph_def.node
        if node.op == "Const"
    }


def keras_weights(consts: dict[str, Any]) -> dict[str, list[Any]]:
    """Keras MobileNet layer name -> its weights, from the TF-slim constants."""

    def bn(scope: str) -> list[Any]:
        return [consts[f"MobilenetV1/{scope}/BatchNorm/{k}"]
                for k in ("gamma", "beta", "moving_mean", "moving_variance")]  # fmt: skip

    weights = {
        "conv1": [consts["MobilenetV1/Conv2d_0/weights"]],
        "conv1_bn": bn("Conv2d_0"),
    }
    for i in range(1, BLOCKS + 1):
        weights[f"conv_dw_{i}"] = [consts[f"MobilenetV1/Conv2d_{i}_depthwise/depthwise_weights"]]
        weights[f"conv_dw_{i}_bn"] = bn(f"Conv2d_{i}_depthwise")
        weights[f"conv_pw_{i}"] = [consts[f"MobilenetV1/Conv2d_{i}_pointwise/weights"]]
        weights[f"conv_pw_{i}_bn"] = bn(f"Conv2d_{i}_pointwise")
    logits_w = consts["MobilenetV1/Logits/Conv2d_1c_1x1/weights"]
    logits_b = consts["MobilenetV1/Logits/Conv2d_1c_1x1/biases"]
    weights["conv_preds"] = [logits_w[..., 1:], logits_b[1:]]  # without the background
    return weights


def converted_model(weights: dict[str, list[Any]], include_top: bool) -> Any:
    """``keras.applications.MobileNet`` (1.0, 224) carrying the converted weights."""
    import keras

    net = keras.applications.MobileNet(
        include_top=include_top, weights=None, input_shape=(224, 224, 3), classes=1000
    )
    missing = [layer.name for layer in net.layers if layer.weights and layer.name not in weights]
    if missing:
        raise WeightsError(f"no converted weights for layers {missing}")
    for layer in net.layers:
        if layer.weights:
            layer.set_weights(weights[layer.name])
    return net


def save_legacy_h5(net: Any, path: Path) -> None:
    """Keras' legacy ``.h5`` weights format: what its ImageNet cache files are."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, net)
    os.replace(tmp, path)


def keras_models_dir(keras_home: str | Path | None = None) -> Path:
    home = keras_home or os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(home) / "models"


def ensure_weights(keras_home: str | Path | None = None, work: Path = WORK_DIR) -> dict:
    """Fetch, check and convert unless done; the paths written (or found)."""
    models = keras_models_dir(keras_home)
    no_top, full = models / NO_TOP_FILE, models / FULL_FILE
    stamp = models / (NO_TOP_FILE + ".source")  # says which graph made the files
    graph = work / GRAPH_FILE
    done = (no_top.is_file() and full.is_file() and stamp.is_file()
            and stamp.read_text().strip() == GRAPH_SHA256
            and graph.is_file() and sha256_file(graph) == GRAPH_SHA256)  # fmt: skip
    if not done:
        graph = extract_graph(fetch_sdist(work), work)
        from fruits.settings import jobs_module

        jobs_module("fruits_spark.inference.models").import_tensorflow()
        weights = keras_weights(graph_constants(load_graph_def(graph)))
        models.mkdir(parents=True, exist_ok=True)
        save_legacy_h5(converted_model(weights, include_top=False), no_top)
        save_legacy_h5(converted_model(weights, include_top=True), full)
        stamp.write_text(GRAPH_SHA256 + "\n")
    return {"no_top": no_top, "full": full, "graph": graph, "converted": not done}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Stage offline ImageNet weights for MobileNet v1.")
    p.add_argument("--keras-home", help="Keras home (default: $KERAS_HOME or ~/.keras)")
    p.add_argument("--work", type=Path, default=WORK_DIR, help="where the sdist and graph go")
    args = p.parse_args(argv)
    try:
        out = ensure_weights(args.keras_home, args.work)
    except WeightsError as exc:
        print(f"make weights: {exc}", file=sys.stderr)
        return 1
    verb = "wrote" if out["converted"] else "already there"
    print(f"MobileNet v1 ImageNet weights ({verb}):\n  {out['no_top']}\n  {out['full']}\n"
          f"  frozen graph for the checks: {out['graph']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
