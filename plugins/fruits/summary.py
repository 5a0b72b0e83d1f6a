"""The run summary: what a batch produced, read back from S3.

``report.json`` (written by reduce.py) gives rows, features, k and the explained
variance; the rejected Parquet gives how many images could not be decoded.

    python -m fruits.summary 2026-11-24 [--bucket B] [--conn-id aws_default]
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

from fruits.config import load_settings, run_prefix, run_uris


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


def run_summary(hook: Any, bucket: str, batch: str) -> dict[str, Any]:
    """Rows, k, explained variance and rejected count of one batch's outputs in S3."""
    prefix = run_prefix(batch)
    key = f"{prefix}report/report.json"
    if not hook.check_for_key(key, bucket_name=bucket):
        raise FileNotFoundError(f"s3://{bucket}/{key} does not exist: has the batch run?")
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
    args = p.parse_args(argv)
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    summary = run_summary(S3Hook(aws_conn_id=args.conn_id), args.bucket, args.batch)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
