"""Label separation on the PCA output (report.json's ``separation``): the numpy figures
agree with scikit-learn and a brute-force 1-NN, and on the demo batch ImageNet weights
keep the labels apart clearly better than random weights."""

from __future__ import annotations

import numpy as np
import pytest

from fruits_spark.pca import separation


def brute_force_nn1(x: np.ndarray, labels: list[str]) -> float:
    hits = 0
    for i in range(len(x)):
        best, best_d = None, np.inf
        for j in range(len(x)):
            d = float(np.sum((x[i] - x[j]) ** 2))
            if j != i and d < best_d:
                best, best_d = j, d
        hits += labels[best] == labels[i]
    return hits / len(x)


@pytest.mark.parametrize("seed", [0, 1])
def test_figures_agree_with_scikit_learn_and_brute_force(seed):
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (4, 5))
    labels = [f"L{i % 4}" for i in range(60)] + ["alone"]  # a label of one image scores 0
    x = np.vstack([centres[i % 4] + rng.normal(0, 1.5, 5) for i in range(60)]
                  + [rng.normal(0, 3, 5)])  # fmt: skip
    assert separation.silhouette(x, labels) == pytest.approx(silhouette_score(x, labels), abs=1e-9)
    assert separation.nn1_accuracy(x, labels) == pytest.approx(brute_force_nn1(x, labels))
    assert 0.3 < separation.nn1_accuracy(x, labels) < 1.0  # neither trivial case


def test_large_outputs_are_sampled_and_the_sample_size_is_stated():
    rng = np.random.default_rng(3)
    n = separation.MAX_ROWS + 500
    labels = ["a" if i % 2 else "b" for i in range(n)]
    x = rng.normal(0, 1, (n, 3)) + np.array([[0, 0, 4.0] if lab == "a" else [0, 0, 0]
                                             for lab in labels])  # fmt: skip
    out = separation.separation(x, labels, n_rows=n * 10)
    assert out["sample_rows"] == separation.MAX_ROWS and out["of_rows"] == n * 10
    assert out["nn1_accuracy"] > 0.9 and out["silhouette"] > 0.4  # well separated
    assert separation.separation(x, labels, n_rows=n * 10) == out  # seeded sample
    one_label = separation.separation(x[:10], ["a"] * 10)
    assert one_label["silhouette"] is None and one_label["nn1_accuracy"] == 1.0


@pytest.mark.slow
def test_imagenet_weights_keep_the_demo_labels_apart_better_than_random(spark, tmp_path):
    """The demo's batch and image size: real ImageNet features separate the labels."""
    import featurize
    import reduce as reduce_job

    from fruits.dev.sample_batch import write_batch

    batch = tmp_path / "batch"
    write_batch(batch, per_label=8)
    figures = {}
    for weights in ("imagenet", "random"):
        out = tmp_path / weights
        featurize.run(spark, featurize.parse_args([
            "--input", str(batch), "--output", str(out / "features"),
            "--rejected", str(out / "rejected"), "--model", "mobilenet",
            "--weights", weights, "--image-size", "96",
        ]))  # fmt: skip
        report = reduce_job.reduce_features(spark, reduce_job.parse_args([
            "--input", str(out / "features"), "--output", str(out / "pca"),
            "--report", str(out / "report"),
        ]))  # fmt: skip
        figures[weights] = report["separation"]
        assert report["separation"]["sample_rows"] == 48
    real, noise = figures["imagenet"], figures["random"]
    assert real["nn1_accuracy"] >= noise["nn1_accuracy"] + 0.15, figures
    assert real["silhouette"] >= noise["silhouette"] + 0.05, figures
