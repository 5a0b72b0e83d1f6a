"""Publication of a batch: a run's staged outputs switched in, its ``_SUCCESS`` marker,
staging left by other runs cleared, and the run summary read back from S3.

A run's steps write a staging prefix of their own, ``runs/_staging/batch=<date>/
<run-key>/`` (:func:`fruits.storage.layout.staging_prefix`); only :func:`publish_batch`, once
both steps succeeded, touches the published ``runs/batch=<date>/``. It checks the
staged outputs (features/ and pca/ Parquet with as many rows as report.json counts),
deletes the batch's ``_SUCCESS``, copies the staged objects over the published ones
(server-side), deletes published objects the new set lacks, writes ``_SUCCESS`` (JSON:
run id, run key, counts) last and deletes the staging prefix.

Readers trust a batch only while ``_SUCCESS`` exists. So a run that fails or is killed
before publishing (a failed or timed-out step, a cluster that does not start, an S3
error) leaves the earlier outputs and their marker exactly as they were; one killed
during the switch leaves the batch unmarked until a rerun publishes it. Staging left by
such runs is deleted by the batch's next run (:func:`clear_staging`) or expires.

``report.json`` (written by reduce.py) gives rows, features, k and the explained
variance; the rejected Parquet gives how many images could not be decoded.

    python -m fruits.storage.publish 2026-11-24 [--bucket B] [--conn-id aws_default] [--any]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from typing import Any

from fruits.settings import load_settings
from fruits.storage import s3sync
from fruits.storage.layout import batch_marker_key, run_prefix, run_uris, staging_prefix

log = logging.getLogger(__name__)

# what check_outputs requires (rejected/ may hold no Parquet: every image decoded)
REQUIRED_OUTPUTS = ("features", "pca")
REPORT = "report/report.json"
PROGRESS = "progress/"  # the steps' last progress reports (fruits.storage.layout.progress_uri)


class BatchNotPublished(FileNotFoundError):
    """The batch has no marker, or a run lacks an output: not to be trusted/published."""


def parquet_parts(hook: Any, bucket: str, prefix: str) -> list[str]:
    """Keys of the Parquet parts under the prefix (Spark's hidden files left out)."""
    return [
        key
        for key in hook.list_keys(bucket_name=bucket, prefix=prefix)
        if key.endswith(".parquet") and not key.rsplit("/", 1)[-1].startswith(("_", "."))
    ]


def parquet_rows(hook: Any, bucket: str, key: str) -> int:
    """Rows of one Parquet object, from its footer alone (two ranged GETs, no data read)."""
    import pyarrow.parquet as pq

    s3 = hook.get_conn()

    def tail(n: int) -> bytes:
        return s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{n}")["Body"].read()

    end = tail(8)
    if len(end) < 8 or end[4:] != b"PAR1":
        raise BatchNotPublished(f"s3://{bucket}/{key} is not a Parquet file")
    footer = tail(int.from_bytes(end[:4], "little") + 8)
    return pq.read_metadata(io.BytesIO(b"PAR1" + footer)).num_rows


def count_parquet_rows(hook: Any, bucket: str, prefix: str) -> int:
    """Rows in every Parquet part under the prefix."""
    return sum(parquet_rows(hook, bucket, key) for key in parquet_parts(hook, bucket, prefix))


def is_published(hook: Any, bucket: str, batch: str) -> bool:
    return bool(hook.check_for_key(batch_marker_key(batch), bucket_name=bucket))


def read_marker(hook: Any, bucket: str, batch: str) -> dict[str, Any] | None:
    """The batch's ``_SUCCESS`` record, or None while the batch is unmarked."""
    if not is_published(hook, bucket, batch):
        return None
    return json.loads(hook.read_key(batch_marker_key(batch), bucket_name=bucket) or "{}")


def check_outputs(hook: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Rows of features/ and pca/ under ``prefix`` (a run's staging prefix); raises
    BatchNotPublished unless both hold Parquet, report.json exists, and the three agree
    on a row count above zero (a job that died half way writes fewer rows, or none)."""
    counts: dict[str, int] = {}
    missing = []
    for name in REQUIRED_OUTPUTS:
        parts = parquet_parts(hook, bucket, f"{prefix}{name}/")
        if not parts:
            missing.append(f"s3://{bucket}/{prefix}{name}/*.parquet")
        counts[name] = sum(parquet_rows(hook, bucket, key) for key in parts)
    if not hook.check_for_key(prefix + REPORT, bucket_name=bucket):
        missing.append(f"s3://{bucket}/{prefix}{REPORT}")
    if missing:
        raise BatchNotPublished(f"missing {', '.join(missing)}")
    n_rows = int(json.loads(hook.read_key(prefix + REPORT, bucket_name=bucket))["n_rows"])
    if not counts["features"] == counts["pca"] == n_rows > 0:
        raise BatchNotPublished(
            f"s3://{bucket}/{prefix}: row counts disagree (features {counts['features']}, "
            f"pca {counts['pca']}, report.json n_rows {n_rows})"
        )
    return counts


def publish_batch(
    hook: Any, bucket: str, batch: str, run_key: str, record: dict[str, Any]
) -> dict[str, Any]:
    """Switch a run's staged outputs in as the batch's published outputs; returns the
    ``_SUCCESS`` record (``record``, the run key and the summary).

    Nothing published changes unless the staged outputs pass :func:`check_outputs`.
    Safe to retry: the staging prefix goes last, and a retry after it went finds the
    marker naming this run key."""
    staging, final = staging_prefix(batch, run_key), run_prefix(batch)
    marker = batch_marker_key(batch)
    staged = s3sync.list_objects(hook, bucket, staging)
    if not staged:
        published = read_marker(hook, bucket, batch)
        if published and published.get("run_key") == run_key:
            return published  # an earlier try of this task got to the end
        raise BatchNotPublished(f"batch {batch}: nothing staged under s3://{bucket}/{staging}")
    try:
        check_outputs(hook, bucket, staging)
    except BatchNotPublished as exc:
        raise BatchNotPublished(f"batch {batch}: {exc}") from None
    summary = run_summary(hook, bucket, batch, prefix=staging)
    record = {**record, "run_key": run_key, **summary}
    sizes = {key: int(meta.get("Size", 0)) for key, meta in staged.items()}
    copies = {final + key[len(staging) :]: key for key in staged if key != staging + REPORT}
    markers = {d: s for d, s in copies.items() if s3sync.is_marker(d)}
    data = {d: s for d, s in copies.items() if d not in markers}
    # The switch: unmarked from here until the new marker is written.
    hook.delete_objects(bucket=bucket, keys=[marker])
    s3sync.copy_objects(hook, bucket, data, sizes)
    keep = {*copies, final + REPORT}
    stale = sorted(k for k in hook.list_keys(bucket_name=bucket, prefix=final) if k not in keep)
    if stale:
        hook.delete_objects(bucket=bucket, keys=stale)
    s3sync.copy_objects(hook, bucket, markers, sizes)
    # report.json names its input and output: the staged ones, which are about to go
    report = hook.read_key(staging + REPORT, bucket_name=bucket)
    report = report.replace(f"s3://{bucket}/{staging}", f"s3://{bucket}/{final}")
    report = with_step_times(report, summary)
    hook.load_string(report, key=final + REPORT, bucket_name=bucket, replace=True)
    hook.load_string(json.dumps(record, sort_keys=True), key=marker, bucket_name=bucket,
                     replace=True)  # fmt: skip
    hook.delete_objects(bucket=bucket, keys=sorted(staged))
    log.info(
        "batch %s: published run %s (%d objects copied, %d stale deleted)",
        batch, run_key, len(copies) + 1, len(stale),
    )  # fmt: skip
    return record


def with_step_times(report: str, summary: dict[str, Any]) -> str:
    """report.json with the run's step wall times and featurize rate (``run``), when the
    steps reported their progress (:mod:`fruits.progress`)."""
    run = {k: summary[k] for k in ("step_seconds", "featurize_rate") if k in summary}
    if not run:
        return report
    data = json.loads(report)
    data["run"] = run
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def clear_staging(hook: Any, bucket: str, batch: str, keep: str | None = None) -> list[str]:
    """Delete what runs of the batch left in staging (killed or failed before publishing),
    except run ``keep``'s; returns the run keys cleared. Only while no other run of the
    batch can still be writing or publishing (the DAG calls it holding the cluster slot)."""
    base = staging_prefix(batch)
    mine = staging_prefix(batch, keep) if keep else None
    doomed = [
        key
        for key in hook.list_keys(bucket_name=bucket, prefix=base)
        if mine is None or not key.startswith(mine)
    ]
    if doomed:
        hook.delete_objects(bucket=bucket, keys=doomed)
    return sorted({key[len(base) :].split("/", 1)[0] for key in doomed})


# What made a batch's features, from its report.json (featurize's metadata): the summary,
# the _SUCCESS marker and the batch's asset event carry it.
PROVENANCE = ("model", "weights", "weights_sha256", "image_size", "runtime", "precision",
              "fidelity")  # fmt: skip


def run_summary(
    hook: Any,
    bucket: str,
    batch: str,
    *,
    require_marker: bool = False,
    prefix: str | None = None,
) -> dict[str, Any]:
    """Rows, k, explained variance and rejected count of one batch's outputs in S3.

    ``require_marker``: refuse a batch without its ``_SUCCESS`` (what readers do).
    ``prefix``: read a run's staged outputs instead of the published ones (the URIs
    in the summary stay the published ones)."""
    prefix = prefix or run_prefix(batch)
    if require_marker and not is_published(hook, bucket, batch):
        raise BatchNotPublished(
            f"s3://{bucket}/{batch_marker_key(batch)} does not exist: the batch has not "
            "run, or a run of it is publishing it right now"
        )
    key = prefix + REPORT
    if not hook.check_for_key(key, bucket_name=bucket):
        raise BatchNotPublished(f"s3://{bucket}/{key} does not exist: has the batch run?")
    report = json.loads(hook.read_key(key, bucket_name=bucket))
    cumulative = report.get("cumulative_variance") or [0.0]
    from fruits.progress import read_progress, step_times

    # each step's wall time and featurize's images/s, from the steps' last progress report
    times = step_times(read_progress(hook, f"s3://{bucket}/{prefix}{PROGRESS}"))
    return {
        "batch": batch,
        "rows": int(report["n_rows"]),
        "n_features": int(report["n_features"]),
        "k": int(report["k"]),
        "explained_variance": float(cumulative[-1]),
        "rejected": count_parquet_rows(hook, bucket, f"{prefix}rejected/"),
        **{key: report.get(key) for key in PROVENANCE if report.get(key) is not None},
        "model": report.get("model"),
        "weights": report.get("weights"),
        "labels": len(report.get("labels") or {}),
        "separation": report.get("separation"),
        **times,
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
    sep = summary.get("separation")
    if sep:
        figures = ", ".join(
            f"{name} {'n/a' if sep.get(key) is None else format(sep[key], '.3f')}"
            for name, key in (("1-NN accuracy", "nn1_accuracy"), ("silhouette", "silhouette"))
        )
        lines.append(
            f"label separation on {sep['sample_rows']} of {sep['of_rows']} rows: {figures}"
        )
    if summary.get("step_seconds"):
        from fruits.progress import duration

        took = ", ".join(f"{step} {duration(s)}" for step, s in summary["step_seconds"].items())
        rate = summary.get("featurize_rate")
        lines.append(f"steps: {took}" + (f"; featurize {rate:,.1f} img/s" if rate else ""))
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
