"""Where a batch's objects live in the bucket: its raw images, its published outputs and
the staging prefix each run writes before ``publish_batch`` switches it in. The DAG, the
steps, the publishing and the IAM policy's tests all derive their keys from here."""

from __future__ import annotations

import re
import secrets


def raw_prefix(batch: str) -> str:
    return f"raw/batch={batch}/"


def run_prefix(batch: str) -> str:
    """The batch's published outputs: what readers see, switched in by publish_batch."""
    return f"runs/batch={batch}/"


# A run's steps never write the published prefix: they write a staging prefix of their
# own, and publish_batch switches it in once every output is there. Under runs/ (the
# EMR nodes may write runs/ only); the leading "_" hides it from Spark readers of runs/.
STAGING_ROOT = "runs/_staging/"
_RUN_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def new_run_key(run_id: str) -> str:
    """A run's staging name: its run id made key-safe, plus a random suffix, so that
    every try of plan_run (and every clear of the run) stages somewhere new."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_id).strip("-._")[:80] or "run"
    return f"{safe}-{secrets.token_hex(4)}"


def staging_prefix(batch: str, run_key: str | None = None) -> str:
    """``runs/_staging/batch=<date>/<run-key>/``; without a key, every run's of the batch."""
    base = f"{STAGING_ROOT}batch={batch}/"
    if run_key is None:
        return base
    if not _RUN_KEY.fullmatch(run_key):
        raise ValueError(f"not a run key: {run_key!r}")
    return f"{base}{run_key}/"


# A batch's outputs are to be trusted only while this marker exists. publish_batch
# deletes it just before switching the staged outputs in and writes it last; a run
# that fails or is killed before publishing never touches it (nor the outputs).
BATCH_MARKER = "_SUCCESS"


def batch_marker_key(batch: str) -> str:
    return f"{run_prefix(batch)}{BATCH_MARKER}"


RUN_OUTPUTS = ("features", "rejected", "pca", "report")


def run_uris(bucket: str, batch: str, run_key: str | None = None) -> dict[str, str]:
    """``features``, ``rejected``, ``pca``, ``report`` -> their s3:// folder: the
    published one, or with ``run_key`` that run's staging folder (where its steps write)."""
    prefix = run_prefix(batch) if run_key is None else staging_prefix(batch, run_key)
    return {name: f"s3://{bucket}/{prefix}{name}/" for name in RUN_OUTPUTS}


def progress_uri(bucket: str, batch: str, run_key: str) -> str:
    """The folder where a run's steps write their live progress (``featurize.json``,
    ``reduce.json``; :mod:`fruits.progress`): in the run's staging prefix, so it is
    published with the outputs and says how long each step took."""
    return f"s3://{bucket}/{staging_prefix(batch, run_key)}progress/"
