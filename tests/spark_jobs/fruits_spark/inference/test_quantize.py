"""precision=int8: MobileNet v1 with its real ImageNet weights (``make weights``) converted
to int8 keeps its features close to the float network's on photographs calibration never
saw, computes mostly in int8 (the float layers are the ones named), gives an image the
same features whatever batch it comes in, and is cached under its own key."""

from __future__ import annotations

import numpy as np
import pytest

from fruits_spark import rules
from fruits_spark.inference import calibration, converted, models, quantize, runtimes
from fruits_spark.pca import separation

MODEL, SIZE = "mobilenet", 224


@pytest.fixture(scope="module")
def int8_model(model_cache) -> tuple[bytes, dict]:
    """The int8 conversion of the real weights, through the product's cache (the session's:
    made once, then read by every test that asks)."""
    data = models.imagenet_weights_path(MODEL).read_bytes()
    content, manifest, _ = converted.cached_or_convert(
        MODEL, SIZE, "imagenet", data, ".h5", threads=2, precision=rules.INT8
    )
    return content, manifest


@pytest.fixture(scope="module")
def held_out() -> np.ndarray:
    """Crops of the held-out photographs, another seed than the manifest's fidelity set."""
    images, _ = calibration.crops(calibration.HELD_OUT_SOURCES, 2, SIZE, seed=7)
    return models.preprocess(MODEL, images)


def test_int8_features_stay_close_to_fp32_on_unseen_photographs(int8_model, held_out):
    content, manifest = int8_model
    net = models.build_model(MODEL, SIZE, models.imagenet_weights_path(MODEL))
    reference = np.asarray(net(held_out, training=False))
    assert np.abs(reference).max() > 1.0  # real weights: random ones give ~1e-11
    cos = quantize.cosine(runtimes.LiteRTModel(content, 2)(held_out), reference)
    assert cos.mean() >= 0.98 and cos.min() >= 0.85, (cos.mean(), cos.min())
    # the figure the conversion measured travels with the file (and the report)
    fidelity = manifest["fidelity"]
    assert fidelity["cosine_mean"] >= 0.98 and fidelity["images"] == 104
    nn1, sil = fidelity["nn1_accuracy"], fidelity["silhouette"]
    assert nn1["int8"] >= nn1["fp32"] - 0.02 and abs(sil["int8"] - sil["fp32"]) < 0.03, fidelity
    assert (manifest["precision"], manifest["scheme"], manifest["calibration"]) == (
        "int8", rules.INT8_SCHEME, rules.CALIBRATION_VERSION,
    )  # fmt: skip


def test_int8_model_computes_in_int8_but_the_named_float_layers(int8_model):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=int8_model[0],
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    dtypes = {d["index"]: d["dtype"] for d in interpreter.get_tensor_details()}
    by_type: dict[str, list[str]] = {"int8": [], "float32": []}
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "MEAN"):
            by_type[np.dtype(dtypes[op["outputs"][0]]).name].append(op["op_name"])
    # 14 convolutions and 13 depthwise ones: conv1, conv_dw_1, conv_pw_1 and the pooling float
    assert sorted(by_type["float32"]) == ["CONV_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "MEAN"]
    assert len(by_type["int8"]) == 24


def test_an_images_int8_features_do_not_depend_on_its_batch(int8_model, held_out):
    run = runtimes.LiteRTModel(int8_model[0], 2)
    together = run(held_out[:8])
    alone = np.concatenate([run(held_out[i : i + 1]) for i in range(8)])
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)


def test_the_int8_model_is_cached_under_its_own_key(int8_model, model_cache):
    sha = models.sha256(models.imagenet_weights_path(MODEL).read_bytes())
    key = converted.cache_key(MODEL, SIZE, sha, rules.INT8)
    assert key != converted.cache_key(MODEL, SIZE, sha) and "-int8-" in key
    hit = converted.load(key, model_cache)
    assert hit is not None and hit[0] == int8_model[0]
    assert converted.check_manifest(hit[1], hit[0], MODEL, SIZE, rules.INT8) is None
    assert "computes in int8, not the run's fp32" in converted.check_manifest(
        hit[1], hit[0], MODEL, SIZE
    )


def test_calibration_is_fixed_and_never_a_held_out_photograph():
    assert not set(calibration.CALIBRATION_SOURCES) & set(calibration.HELD_OUT_SOURCES)
    first = calibration.calibration_images(32, 12)
    np.testing.assert_array_equal(first, calibration.calibration_images(32, 12))
    assert first.shape == (12, 32, 32, 3) and first.dtype == np.uint8
    assert len({x.tobytes() for x in first}) == 12  # twelve different crops


def test_int8_is_refused_for_an_unmeasured_model():
    with pytest.raises(ValueError, match="int8 is measured for mobilenet only, not vgg16"):
        quantize.to_int8(None, "vgg16", 64)


def test_the_label_figures_are_scikit_learns():
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 60)
    features = rng.normal(size=(60, 16)) + np.pad(np.eye(4)[labels] * 2, ((0, 0), (0, 12)))
    expected = silhouette_score(features, labels, metric="cosine")
    assert separation.silhouette(features, labels, "cosine") == pytest.approx(expected, abs=1e-4)
    # two tight, far apart groups: every nearest neighbour has the same label
    pairs = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    assert separation.nn1_accuracy(pairs, np.array([0, 0, 1, 1]), "cosine") == 1.0
    assert separation.nn1_accuracy(pairs, np.array([0, 1, 0, 1]), "cosine") == 0.0
