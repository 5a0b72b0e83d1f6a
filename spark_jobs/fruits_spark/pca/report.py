"""The reduce job's report: ``report.json`` and two PNG plots, as plain functions.

Dicts and arrays in, bytes out; no Spark, no files, no pyplot (figures are drawn with
matplotlib's object API on the Agg canvas, so nothing needs a display or global state).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

UNKNOWN = "unknown"
SIGN_CONVENTION = "largest-|value| entry of each component is positive (sklearn svd_flip)"
MAX_LEGEND_ROWS = 45


def build_report(
    *,
    n_rows: int,
    n_features: int,
    k: int,
    explained_variance_ratio: Sequence[float],
    explained_variance: Sequence[float],
    variance_threshold: float | None,
    k_requested: int | None,
    features_metadata: Mapping | None,
    labels: Mapping[str, int],
    inputs: Mapping[str, str] | None = None,
    rejected: Sequence[Mapping[str, str]] | None = None,
) -> dict:
    """The content of ``report.json``. ``explained_variance_ratio`` covers every component
    (each one's share of the total variance); the report keeps the first ``k``.
    ``rejected`` (path, label, error of every image featurize could not decode) is
    listed with its count, so nothing is lost silently."""
    ratios = [float(r) for r in explained_variance_ratio]
    cumulative = np.cumsum(ratios).tolist()
    meta = dict(features_metadata or {})
    return {
        "n_rows": int(n_rows),
        "n_features": int(n_features),
        "k": int(k),
        "explained_variance_ratio": ratios[:k],
        "cumulative_variance": cumulative[:k],
        "explained_variance": [float(v) for v in explained_variance[:k]],
        "total_variance": float(np.sum(explained_variance)),
        "n_components_fitted": len(ratios),
        "variance_threshold": variance_threshold,
        "k_requested": k_requested,
        "model": meta.get("model", UNKNOWN),
        "weights": meta.get("weights", UNKNOWN),
        "weights_sha256": meta.get("weights_sha256", UNKNOWN),
        "image_size": meta.get("image_size"),
        "runtime": meta.get("runtime", UNKNOWN),
        # features made before precisions existed were fp32
        "precision": meta.get("precision", "fp32"),
        **({"fidelity": dict(meta["fidelity"])} if meta.get("fidelity") else {}),
        "labels": {str(label): int(count) for label, count in sorted(labels.items())},
        "sign_convention": SIGN_CONVENTION,
        **({"inputs": dict(inputs)} if inputs else {}),
        **(_rejected_section(rejected) if rejected is not None else {}),
    }


def _rejected_section(rejected: Sequence[Mapping[str, str]]) -> dict:
    rows = sorted(
        ({"path": r["path"], "label": r["label"], "error": r["error"]} for r in rejected),
        key=lambda r: r["path"],
    )
    by_label: dict[str, int] = {}
    for r in rows:
        by_label[str(r["label"])] = by_label.get(str(r["label"]), 0) + 1
    return {"n_rejected": len(rows), "rejected_by_label": by_label, "rejected": rows}


def report_json(report: Mapping) -> bytes:
    return (json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def cumulative_variance_png(
    explained_variance_ratio: Sequence[float], k: int, threshold: float | None = None
) -> bytes:
    """Cumulative explained variance over every component, the threshold (if any) as a
    horizontal line and the chosen ``k`` marked."""
    cumulative = np.cumsum(np.asarray(explained_variance_ratio, dtype=np.float64))
    x = np.arange(1, cumulative.size + 1)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.plot(x, cumulative, color="tab:blue", lw=1.5, label="cumulative explained variance")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"threshold {threshold:g}")
    reached = float(cumulative[k - 1])
    ax.axvline(k, color="tab:green", ls=":", lw=1)
    ax.plot([k], [reached], "o", color="tab:green", label=f"k = {k} ({reached:.4f})")
    ax.set_xlabel("number of components")
    ax.set_ylabel("cumulative explained variance")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0.5, max(cumulative.size, 2) + 0.5)
    if cumulative.size > 50:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("PCA: cumulative explained variance")
    return _png(fig)


def pca_scatter_png(coords: np.ndarray, labels: Sequence[str], title: str | None = None) -> bytes:
    """Rows on the first two components (``coords`` is (n, 2), or (n, 1) plotted against
    zero), one colour per label, with a legend."""
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] not in (1, 2) or coords.shape[0] != len(labels):
        raise ValueError(f"coords must be (n, 1) or (n, 2) for {len(labels)} labels")
    x = coords[:, 0]
    y = coords[:, 1] if coords.shape[1] == 2 else np.zeros_like(x)
    labels_arr = np.asarray([str(label) for label in labels], dtype=object)
    names = sorted(set(labels_arr.tolist()))
    legend_cols = math.ceil(len(names) / MAX_LEGEND_ROWS)
    fig = Figure(figsize=(8 + 2 * legend_cols, 6 if legend_cols == 1 else 8))
    ax = fig.subplots()
    palette = "tab10" if len(names) <= 10 else "tab20" if len(names) <= 20 else "turbo"
    cmap = matplotlib.colormaps[palette]
    size = 12 if len(x) <= 2000 else 4
    for i, name in enumerate(names):
        colour = cmap(i % 20) if len(names) <= 20 else cmap(i / max(len(names) - 1, 1))
        mask = labels_arr == name
        ax.scatter(x[mask], y[mask], s=size, alpha=0.7, color=colour, label=name, linewidths=0)
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2" if coords.shape[1] == 2 else "0 (k = 1: one component only)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"PCA: first two components ({len(x)} rows)")
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small" if legend_cols == 1 else "x-small",
        ncol=legend_cols,
        markerscale=2,
        frameon=False,
    )
    return _png(fig)
