"""Which precision made the features travels with them: the features column's metadata
(featurize), report.json (reduce's report, from that metadata) and, for int8, the fidelity
its conversion measured."""

from __future__ import annotations

import featurize
import reduce

from fruits_spark.pca.report import build_report

FIDELITY = {"cosine_mean": 0.987, "cosine_p1": 0.95, "images": 52, "set": "held-out"}
BASE = ["--input", "i", "--output", "o", "--rejected", "r", "--model", "mobilenet"]


def report_of(metadata: dict) -> dict:
    return build_report(
        n_rows=4, n_features=1024, k=1, explained_variance_ratio=[1.0],
        explained_variance=[2.0], variance_threshold=0.95, k_requested=None,
        features_metadata=metadata, labels={"a": 4},
    )  # fmt: skip


def test_int8_features_and_their_report_say_int8_with_the_fidelity():
    args = featurize.parse_args([*BASE, "--precision", "int8"])
    meta = featurize.features_metadata(args, "d914", 1024, {"fidelity": FIDELITY})
    assert (meta["precision"], meta["runtime"], meta["fidelity"]) == ("int8", "litert", FIDELITY)
    report = report_of(meta)
    assert (report["precision"], report["runtime"], report["fidelity"]) == (
        "int8", "litert", FIDELITY,
    )  # fmt: skip
    assert (report["model"], report["weights_sha256"], report["image_size"]) == (
        "mobilenet", "d914", 224,
    )  # fmt: skip
    kept = {"model", "weights", "weights_sha256", "image_size", "runtime", "precision"}
    assert kept <= set(reduce.METADATA_KEYS)  # the pca column's metadata keeps them too


def test_fp32_features_say_fp32_and_carry_no_fidelity():
    args = featurize.parse_args(BASE)
    # an fp32 file's manifest has no fidelity; even a stray one is not reported as fp32's
    meta = featurize.features_metadata(args, "d914", 1024, {"fidelity": FIDELITY})
    assert meta["precision"] == "fp32" and "fidelity" not in meta
    assert report_of(meta)["precision"] == "fp32" and "fidelity" not in report_of(meta)
    # features written before precisions existed were fp32
    assert report_of({"model": "mobilenet"})["precision"] == "fp32"
