"""MobileNet v1's ImageNet weights staged offline by ``make weights``: the converted Keras
model equals the frozen TF1 graph it came from, names real photos as ImageNet does,
loads through ``weights="imagenet"`` with no network, and a bad download is refused.

No test downloads: they use what ``make weights`` (a prerequisite of ``make test``) wrote.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fruits.dev import imagenet_mobilenet as im
from fruits_spark.inference import models
from fruits_spark.inference.images import decode_image

# Photos that ship with packages installed here, and their ImageNet class (Keras' index)
PHOTOS = {
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"): 652,  # military uniform
    ("sklearn", "datasets/images/china.jpg"): 975,  # lakeside
}


def photo(package: str, rel: str) -> Path:
    import importlib

    return Path(importlib.import_module(package).__file__).parent / rel


@pytest.fixture(scope="module")
def staged() -> dict[str, Path]:
    models_dir = im.keras_models_dir()
    paths = {"no_top": models_dir / im.NO_TOP_FILE, "full": models_dir / im.FULL_FILE,
             "graph": im.WORK_DIR / im.GRAPH_FILE}  # fmt: skip
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        pytest.fail(f"not staged: {missing}; `make weights` (run by `make test`) writes them")
    return paths


def images(size: int = 224) -> np.ndarray:
    """The photos, decoded as the job decodes."""
    return np.stack([decode_image(photo(*key).read_bytes(), size) for key in PHOTOS])


def graph_outputs(graph: Path, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and logits of the frozen graph itself (its input takes one image)."""
    tf = models.import_tensorflow()
    graph_def = im.load_graph_def(graph)
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    pooled, logits = [], []
    with tf.compat.v1.Session(graph=g) as session:
        for x in batch:
            p, lg = session.run([im.GRAPH_POOLED, im.GRAPH_LOGITS], {im.GRAPH_INPUT: x[None]})
            pooled.append(p.reshape(-1))
            logits.append(lg.reshape(-1))
    return np.stack(pooled), np.stack(logits)


@pytest.fixture(scope="module")
def inputs(sample_batch) -> np.ndarray:
    fruits = sorted(sample_batch.rglob("*.jpg"))[:2]
    arrays = [decode_image(p.read_bytes(), 224) for p in fruits]
    return models.preprocess("mobilenet", np.concatenate([images(), np.stack(arrays)]))


def test_converted_features_equal_the_frozen_graphs_own(staged, inputs):
    expected, _ = graph_outputs(staged["graph"], inputs)
    net = models.build_model("mobilenet", 224, staged["no_top"])
    actual = net.predict(inputs, verbose=0)
    assert actual.shape == (4, 1024)
    scale = float(np.abs(expected).max())
    assert scale > 0.1  # real features, not ~0
    assert not np.allclose(expected[0], expected[1:], rtol=1e-2)  # images differ
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale)


def test_the_converted_classifier_names_real_photos(staged, inputs):
    import keras

    net = keras.applications.MobileNet(include_top=True, weights=None)
    net.load_weights(str(staged["full"]))
    probs = net.predict(inputs[: len(PHOTOS)], verbose=0)
    assert probs.argmax(axis=1).tolist() == list(PHOTOS.values())
    assert probs.max(axis=1).min() > 0.3  # confidently, not by a hair
    _, logits = graph_outputs(staged["graph"], inputs[: len(PHOTOS)])
    assert (logits.argmax(axis=1) - 1).tolist() == list(PHOTOS.values())  # 0 = background


def test_weights_imagenet_loads_from_the_cache_with_no_network(staged, monkeypatch):
    import socket

    import keras

    def refuse(*args, **kwargs):
        raise AssertionError("network access while loading cached weights")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    cached = keras.applications.MobileNet(include_top=False, weights="imagenet",
                                          input_shape=(224, 224, 3))  # fmt: skip
    ours = models.build_model("mobilenet", 224, staged["no_top"])
    for a, b in zip(cached.get_weights(), ours.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert models.imagenet_weights_path("mobilenet") == staged["no_top"]


def tar_with(members: dict[str, bytes], path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_tampered_or_incomplete_sdist_is_refused(tmp_path):
    tampered = tar_with({im.GRAPH_MEMBER: b"not the graph"}, tmp_path / "a.tar.gz")
    with pytest.raises(im.WeightsError, match="sha256"):
        im.extract_graph(tampered, tmp_path)
    empty = tar_with({"nudity-0.2.3/setup.py": b""}, tmp_path / "b.tar.gz")
    with pytest.raises((im.WeightsError, KeyError)):
        im.extract_graph(empty, tmp_path)
    assert not (tmp_path / im.GRAPH_FILE).exists()  # nothing written


def test_make_weights_reports_a_failure_in_one_line(tmp_path, monkeypatch, capsys):
    def offline(work):
        raise im.WeightsError("could not download nudity==0.2.3 with pip: no network")

    monkeypatch.setattr(im, "fetch_sdist", offline)
    assert im.main(["--keras-home", str(tmp_path / "k"), "--work", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("make weights: could not download") and "Traceback" not in err
    assert not (tmp_path / "k" / "models" / im.NO_TOP_FILE).exists()


def test_make_weights_is_idempotent(staged, tmp_path):
    first = im.ensure_weights(tmp_path, im.WORK_DIR)  # the staged sdist: no download
    assert first["converted"] and first["no_top"].is_file() and first["full"].is_file()
    mtime = first["no_top"].stat().st_mtime_ns
    second = im.ensure_weights(tmp_path, im.WORK_DIR)
    assert not second["converted"] and second["no_top"].stat().st_mtime_ns == mtime
