"""The references the jobs are measured against: raw single-process Keras and raw
single-process LiteRT (``bench.raw_keras``, each in a process of its own) with the job's
features checked against Keras' vectors, and scikit-learn's PCA of the same matrix the
reduce job reads."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.data import VAR
from bench.launch import job_env, run_checked

PARITY_ROWS = 64  # raw Keras's vectors kept for the parity check
# the features' contract (tests/spark_jobs/fruits_spark/inference/test_runtimes.py)
RTOL, ATOL = 1e-4, 1e-4


def raw_keras(
    model: str,
    size: int,
    folder: Path,
    part: str,
    out: Path,
    save: int = 0,
    threads: int = 0,
    runtime: str = "keras",
    *extra: str,
) -> dict:
    """``bench.raw_keras`` over the ``part`` slice of ``folder``, in a process of its own
    (``save``: the first vectors kept for ``parity``); its results and wall time."""
    cmd = [sys.executable, "-m", "bench.raw_keras", "--model", model, "--size", str(size),
           "--input", str(folder), "--json", str(out), "--part", part, "--runtime", runtime,
           "--threads", str(threads), "--save-features", str(save), *extra]  # fmt: skip
    load = os.getloadavg()[0]
    t0 = time.time()
    run_checked(cmd, job_env([]))
    result = json.loads(out.read_text())
    result["process_s"] = time.time() - t0
    result["loadavg_before"] = load
    return result


def convert(model: str, size: int, out: Path, *extra: str) -> dict:
    """Fill the converted-model cache the job and raw LiteRT read (so neither pays the
    conversion in its timings); the conversion's own cost, once per model and size
    (``extra``: ``--weights``, ``--precision``)."""
    return raw_keras(model, size, out.parent, "0/1", out, 0, 0, "litert", "--convert-only", *extra)


def parity(raw_npz: Path, features_dir: Path) -> dict:
    """The job's vectors against raw Keras's for the same files."""
    import pandas as pd

    from fruits_spark.inference.quantize import cosine

    saved = np.load(raw_npz)
    job = pd.read_parquet(features_dir, columns=["path", "features"])
    by_path = {p.removeprefix("file:"): v for p, v in zip(job.path, job.features, strict=True)}
    expected = saved["features"]
    got = np.stack([by_path[p] for p in saved["paths"]])
    scale = float(np.max(np.abs(expected)))
    cosines = cosine(got, expected)
    return {
        "rows": len(expected),
        "allclose": bool(np.allclose(got, expected, rtol=RTOL, atol=ATOL)),
        "max_abs_diff": float(np.max(np.abs(got - expected))),
        # MobileNetV2 with seeded random weights gives features of ~1e-11, all under
        # atol=1e-4: the contract's check is vacuous there, so also check at their scale.
        "feature_scale": scale,
        "allclose_at_scale": bool(np.allclose(got, expected, rtol=RTOL, atol=ATOL * scale)),
        # how int8 features are judged (docs/precision.md): their direction, not their digits
        "cosine_mean": float(cosines.mean()),
        "cosine_min": float(cosines.min()),
    }


def read_matrix(features: Path):
    """The Parquet features as pandas (path, label) and a float32 matrix, the way a
    single-process script would read them: Arrow's flat value buffer reshaped (as the
    job does), not ``np.stack`` over one numpy array per row, which is slower and would
    make scikit-learn's side look worse than it need be."""
    import pyarrow.parquet as pq

    table = pq.read_table(features, columns=["path", "label", "features"])
    vectors = table.column("features").combine_chunks()
    x = vectors.flatten().to_numpy().reshape(len(vectors), -1)
    return table.select(["path", "label"]).to_pandas(), x


def sklearn_pca(features: Path, repeats: int, variance: float = 0.95) -> dict:
    """scikit-learn on the same matrix, ``repeats`` times each: ``PCA(n_components=0.95)``
    fit + transform (its default solver; the reference the target is set against), the
    same with ``svd_solver="covariance_eigh"`` (the job's algorithm) and on float64 (the
    job's precision); reading the Parquet into a matrix (``read``, timed apart: the
    fit+transform reference starts from a matrix in memory, the job from Parquet); and a
    script doing the job's work bar the report: read Parquet, fit, project, write
    Parquet."""
    from sklearn.decomposition import PCA

    frame, x = read_matrix(features)
    cases = {
        "auto": ({}, x),
        "covariance_eigh": ({"svd_solver": "covariance_eigh"}, x),
        "auto_float64": ({}, x.astype(np.float64)),
    }
    runs: dict = {name: [] for name in [*cases, "read", "script"]}
    k, solver = None, None
    for _ in range(repeats):
        for name, (kwargs, data) in cases.items():
            t = time.perf_counter()
            pca = PCA(n_components=variance, **kwargs)
            pca.fit_transform(data)
            runs[name].append(time.perf_counter() - t)
            if name == "auto":
                k, solver = int(pca.n_components_), pca._fit_svd_solver
        t = time.perf_counter()
        read_matrix(features)
        runs["read"].append(time.perf_counter() - t)
        t = time.perf_counter()
        frame, x = read_matrix(features)
        y = PCA(n_components=variance).fit_transform(x).astype(np.float32)
        with tempfile.TemporaryDirectory(dir=VAR) as tmp:
            frame[["path", "label"]].assign(pca=list(y)).to_parquet(Path(tmp) / "pca.parquet")
        runs["script"].append(time.perf_counter() - t)
    return {"shape": list(x.shape), "dtype": str(x.dtype), "k": k, "solver": solver,
            "runs_s": runs, "loadavg_before": os.getloadavg()[0]}  # fmt: skip
