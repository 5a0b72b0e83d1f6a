"""The numpy core of the PCA: moments of rows, their merge, the fit, k and the projection.

Moments are merged with Chan et al.'s formula
``M2 = sum M2_i + sum n_i (mean_i - mean)(mean_i - mean)^T``; centring before
multiplying keeps it stable where ``X^T X - n mean mean^T`` would lose digits to a large
mean.

The fit is ``numpy.linalg.eigh`` of the covariance ``M2 / (n - 1)``, eigenvalues sorted
descending with tiny negatives clipped to 0; explained variance ratios are eigenvalue /
sum of eigenvalues, as scikit-learn reports them. This is scikit-learn's
``svd_solver="covariance_eigh"`` and Spark ML's PCA, without materialising the data on
one machine.

Sign convention: an eigenvector's sign is arbitrary, so every component is flipped to
make its entry of largest absolute value positive (the first such entry on ties). This
is scikit-learn's ``svd_flip(u_based_decision=False)``, so components match
``sklearn.decomposition.PCA`` exactly, not only up to sign.

Nothing here needs Spark or Arrow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fruits_spark import rules
from fruits_spark.jobs import JobError

CUMULATIVE_TOLERANCE = 1e-12  # so that --variance 1.0 is reached despite rounding


@dataclass(frozen=True)
class Moments:
    """Count, mean and centred scatter matrix (``M2``) of a set of rows, in float64."""

    n: int
    mean: np.ndarray  # (n_features,)
    m2: np.ndarray  # (n_features, n_features)

    @classmethod
    def from_bytes(cls, n: int, mean: bytes, m2: bytes) -> Moments:
        """The moments whose ``mean`` and ``m2`` are float64 buffers (``ndarray.tobytes``)."""
        mean_arr = np.frombuffer(mean, dtype=np.float64)
        d = mean_arr.size
        return cls(int(n), mean_arr, np.frombuffer(m2, dtype=np.float64).reshape(d, d))


@dataclass(frozen=True)
class PCAModel:
    """A fitted PCA with every component (``min(n_rows, n_features)`` of them)."""

    n_rows: int
    n_features: int
    mean: np.ndarray  # (n_features,)
    components: np.ndarray  # (n_components, n_features), rows sorted by variance, descending
    explained_variance: np.ndarray  # (n_components,) eigenvalues of the covariance (ddof=1)
    explained_variance_ratio: np.ndarray  # (n_components,) share of the total variance

    @property
    def cumulative_variance(self) -> np.ndarray:
        return np.cumsum(self.explained_variance_ratio)


def partition_moments(x: np.ndarray) -> Moments:
    """``n``, mean and ``(X - mean)^T (X - mean)`` of the rows of ``x``, in float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {x.shape}")
    n, d = x.shape
    if n == 0:
        return Moments(0, np.zeros(d), np.zeros((d, d)))
    mean = x.mean(axis=0)
    centred = x - mean
    return Moments(n, mean, centred.T @ centred)


def merge_pair(a: Moments, b: Moments) -> Moments:
    """Chan et al.: ``M2 = M2_a + M2_b + (n_a n_b / n) (mean_b - mean_a)(mean_b - mean_a)^T``."""
    if b.n == 0:
        return a
    if a.n == 0:
        return b
    n = a.n + b.n
    delta = b.mean - a.mean
    m2 = a.m2 + b.m2
    m2 += np.outer(delta, delta) * (a.n * b.n / n)
    return Moments(n, a.mean + delta * (b.n / n), m2)


def merge_moments(parts: Iterable[Moments]) -> Moments | None:
    """All parts merged pairwise, one at a time (memory: two ``M2``); None if no rows."""
    total: Moments | None = None
    for part in parts:
        if part.n:
            total = part if total is None else merge_pair(total, part)
    return total


def _flip_signs(components: np.ndarray) -> np.ndarray:
    """Make the largest-|value| entry of every row positive (scikit-learn's svd_flip)."""
    rows = np.arange(components.shape[0])
    signs = np.sign(components[rows, np.argmax(np.abs(components), axis=1)])
    signs[signs == 0] = 1.0
    return components * signs[:, np.newaxis]


def fit_from_covariance(moments: Moments) -> PCAModel:
    """Eigendecomposition of ``M2 / (n - 1)``: components sorted by variance, signs fixed."""
    n, d = moments.n, moments.mean.size
    if n < 2:
        raise JobError(f"need at least 2 rows to fit a PCA, got {n}")
    covariance = moments.m2 / (n - 1)
    covariance = (covariance + covariance.T) / 2  # exact symmetry for eigh
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]  # descending (eigh returns ascending)
    n_components = min(n, d)
    order = order[:n_components]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    total = eigenvalues.sum()
    if not total > 0:
        raise JobError("all feature vectors are identical (zero variance): nothing to reduce")
    return PCAModel(
        n_rows=n,
        n_features=d,
        mean=moments.mean,
        components=_flip_signs(eigenvectors[:, order].T),
        explained_variance=eigenvalues,
        explained_variance_ratio=eigenvalues / total,
    )


def choose_k(ratios: np.ndarray, variance: float | None = None, k: int | None = None) -> int:
    """``k`` itself (checked against the number of components), or the smallest ``k`` whose
    cumulative explained variance reaches ``variance`` (``>=``, up to rounding)."""
    ratios = np.asarray(ratios, dtype=np.float64)
    n_components = ratios.size
    if k is not None and variance is not None:
        raise JobError("--k and --variance are mutually exclusive")
    if k is not None:
        if not 1 <= k <= n_components:
            raise JobError(
                f"--k must be between 1 and min(n_rows, n_features) = {n_components}, got {k}"
            )
        return int(k)
    if variance is None:
        raise JobError("one of --k or --variance is required")
    error = rules.variance_error(variance)
    if error:
        raise JobError(f"--variance {error}")
    cumulative = np.cumsum(ratios)
    reached = np.nonzero(cumulative >= variance - CUMULATIVE_TOLERANCE)[0]
    return int(reached[0]) + 1 if reached.size else n_components


def project_array(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """``(x - mean) @ components.T`` in float64."""
    return (np.asarray(x, dtype=np.float64) - mean) @ components.T
