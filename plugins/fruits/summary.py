"""The run summary: what a batch produced, read back from S3; and the batch's marker.

``report.json`` (written by reduce.py) gives rows, features, k and the explained
variance; the rejected Parquet gives how many images could not be decoded.

Readers trust a batch only while ``runs/batch=<date>/_SUCCESS`` exists. A run takes
it down (:func:`retract_batch`) before its cluster can overwrite anything, and puts
it back (:func:`mark_batch`, a small JSON record) only after its steps succeeded and
:func:`check_outputs` found every output. So a failed run leaves its batch
unmarked, whatever its jobs managed to write; a run that fails before its cluster
(bad parameters, no batch, an S3 error on upload) leaves the previous outputs and
their marker as they were.

    python -m fruits.summary 2026-11-24 [--bucket B] [--conn-id aws_default] [--any]
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

from fruits.config import batch_marker_key, load_settings, run_prefix, run_uris

# what check_outputs requires (rejected/ may hold no Parquet: every image decoded)
REQUIRED_OUTPUTS = ("features/", "pca/")


class BatchNotPublished(FileNotFoundError):
    """The batch has no marker, or lacks an output: its outputs are not to be trusted."""


def count_parquet_rows(hook: Any, bucket: str, prefix: str) -> int:
    """Rows in every ``*.parquet`` object under the prefix (footers only, no data read)."""
    import pyarrow.parquet as pq

    rows = 0
    for obj in hook.iter_file_metadata(prefix=prefix, bucket_name=bucket):
        key = obj["Key"]
        if not key.endswith(".parquet") or key.rsplit("/", 1)[-1].startswith(("_", ".")):
            continue
        data = hook.get_key(key, bucket_name=bucket).get()["Body"].read()
        rows += pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
    return rows


def is_published(hook: Any, bucket: str, batch: str) -> bool:
    return bool(hook.check_for_key(batch_marker_key(batch), bucket_name=bucket))


def retract_batch(hook: Any, bucket: str, batch: str) -> bool:
    """Delete the batch's marker (before anything overwrites its outputs); True if it
    was there."""
    key = batch_marker_key(batch)
    present = is_published(hook, bucket, batch)
    if present:
        hook.delete_objects(bucket=bucket, keys=[key])
    return present


def check_outputs(hook: Any, bucket: str, batch: str) -> None:
    """BatchNotPublished unless features/ and pca/ hold Parquet and report.json exists."""
    prefix = run_prefix(batch)
    missing = [
        f"s3://{bucket}/{prefix}{name}*.parquet"
        for name in REQUIRED_OUTPUTS
        if not any(
            obj["Key"].endswith(".parquet")
            for obj in hook.iter_file_metadata(prefix=prefix + name, bucket_name=bucket)
        )
    ]
    if not hook.check_for_key(f"{prefix}report/report.json", bucket_name=bucket):
        missing.append(f"s3://{bucket}/{prefix}report/report.json")
    if missing:
        raise BatchNotPublished(f"batch {batch}: missing {', '.join(missing)}")


def mark_batch(hook: Any, bucket: str, batch: str, record: dict[str, Any]) -> str:
    """Write the batch's marker last (after :func:`check_outputs`); returns its URI."""
    key = batch_marker_key(batch)
    hook.load_string(json.dumps(record, sort_keys=True), key=key, bucket_name=bucket, replace=True)
    return f"s3://{bucket}/{key}"


def run_summary(
    hook: Any, bucket: str, batch: str, *, require_marker: bool = False
) -> dict[str, Any]:
    """Rows, k, explained variance and rejected count of one batch's outputs in S3.

    ``require_marker``: refuse a batch without its ``_SUCCESS`` (what readers do)."""
    prefix = run_prefix(batch)
    if require_marker and not is_published(hook, bucket, batch):
        raise BatchNotPublished(
            f"s3://{bucket}/{batch_marker_key(batch)} does not exist: the batch has not "
            "run, or a run of it failed or is under way"
        )
    key = f"{prefix}report/report.json"
    if not hook.check_for_key(key, bucket_name=bucket):
        raise BatchNotPublished(f"s3://{bucket}/{key} does not exist: has the batch run?")
    report = json.loads(hook.read_key(key, bucket_name=bucket))
    cumulative = report.get("cumulative_variance") or [0.0]
    return {
        "batch": batch,
        "rows": int(report["n_rows"]),
        "n_features": int(report["n_features"]),
        "k": int(report["k"]),
        "explained_variance": float(cumulative[-1]),
        "rejected": count_parquet_rows(hook, bucket, f"{prefix}rejected/"),
        "model": report.get("model"),
        "weights": report.get("weights"),
        "labels": len(report.get("labels") or {}),
        "outputs": run_uris(bucket, batch),
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"batch {summary['batch']}: {summary['rows']} images featurized "
        f"({summary['labels']} labels), {summary['rejected']} rejected",
        f"PCA: {summary['n_features']} features -> k={summary['k']} components, "
        f"explained variance {summary['explained_variance']:.4f}",
        f"model {summary['model']}, weights {summary['weights']}",
    ]
    lines += [f"  {name:<9} {uri}" for name, uri in summary["outputs"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("batch", help="YYYY-MM-DD")
    p.add_argument("--bucket", default=settings.bucket)
    p.add_argument("--conn-id", default=settings.aws_conn_id)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--any", action="store_true", help="summarize a batch without _SUCCESS too")
    args = p.parse_args(argv)
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=args.conn_id)
    summary = run_summary(hook, args.bucket, args.batch, require_marker=not args.any)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
