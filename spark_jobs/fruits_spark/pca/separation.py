"""Do the reduced features keep the labels apart? Two figures on (a sample of) the PCA output.

- leave-one-out 1-nearest-neighbour label accuracy: the share of images whose nearest
  other image (Euclidean, in PCA space) has the same label;
- the silhouette score by label, as scikit-learn computes it (Euclidean; an image alone
  in its label scores 0).

Both also take ``metric="cosine"``: the int8 conversion judges its features with them
(``fruits_spark.inference.quantize.fidelity``).

Both are O(n^2) in memory and time, so they run on a seeded sample of at most
``MAX_ROWS`` rows, and the report says how many. numpy only: the jobs run on nodes
without scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_ROWS = 2000  # a 2000 x 2000 float64 distance matrix: 32 MB on the driver


METRICS = ("euclidean", "cosine")  # cosine: 1 - cosine similarity, as scikit-learn's


def _distances(x: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: expected one of {METRICS}")
    x = np.asarray(x, dtype=np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    if metric == "cosine":
        unit = x / np.maximum(np.sqrt(sq), np.finfo(float).tiny)[:, None]
        return np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.maximum(d2, 0.0, out=d2)
    return np.sqrt(d2)


def nn1_accuracy(x: np.ndarray, labels: Sequence, metric: str = "euclidean") -> float:
    """Leave-one-out 1-NN label accuracy (ties: the first nearest in row order)."""
    y = np.asarray(labels)
    d = _distances(x, metric)
    np.fill_diagonal(d, np.inf)
    return float(np.mean(y[np.argmin(d, axis=1)] == y))


def silhouette(x: np.ndarray, labels: Sequence, metric: str = "euclidean") -> float:
    """Mean silhouette coefficient by label (needs 2 <= labels < rows)."""
    y = np.asarray(labels)
    names, codes = np.unique(y, return_inverse=True)
    if not 2 <= len(names) < len(y):
        raise ValueError(f"silhouette needs 2 to n-1 labels, got {len(names)} for {len(y)} rows")
    d = _distances(x, metric)
    sums = np.stack([d[:, codes == c].sum(axis=1) for c in range(len(names))], axis=1)
    sizes = np.bincount(codes, minlength=len(names)).astype(np.float64)
    own = sizes[codes]
    rows = np.arange(len(y))
    a = np.where(own > 1, sums[rows, codes] / np.maximum(own - 1, 1), 0.0)
    means = sums / sizes[None, :]
    means[rows, codes] = np.inf
    b = means.min(axis=1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), np.finfo(float).tiny), 0.0)
    return float(np.mean(s))


def separation(
    x: np.ndarray, labels: Sequence[str], *, n_rows: int | None = None, seed: int = 0
) -> dict:
    """The report's ``separation`` section: both figures on a seeded sample of at most
    ``MAX_ROWS`` of the given rows (``n_rows``: how many rows the output has in all)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray([str(label) for label in labels])
    if len(y) > MAX_ROWS:
        keep = np.sort(np.random.default_rng(seed).choice(len(y), MAX_ROWS, replace=False))
        x, y = x[keep], y[keep]
    out: dict = {
        "sample_rows": int(len(y)),
        "of_rows": int(n_rows if n_rows is not None else len(y)),
        "space": f"pca ({x.shape[1] if x.ndim == 2 else 0} components)",
        "nn1_accuracy": None,
        "silhouette": None,
    }
    n_labels = len(np.unique(y))
    if len(y) >= 2 and x.ndim == 2 and x.shape[1] > 0:
        out["nn1_accuracy"] = nn1_accuracy(x, y)
    if 2 <= n_labels < len(y) and x.ndim == 2 and x.shape[1] > 0:
        out["silhouette"] = silhouette(x, y)
    return out
