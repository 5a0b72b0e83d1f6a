"""The bodies of the DAG's ``@task`` functions, so the DAG file only declares.

Each reads the settings when it runs (a re-parsed DAG sees the current environment),
talks to S3 through the provider's hook, and turns what a retry cannot fix into
``AirflowFailException``. The DAG file imports this module inside its tasks only: its
imports (the provider's hooks, boto3) stay out of parsing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk.exceptions import AirflowFailException

from fruits.clusters import backend
from fruits.settings import load_settings
from fruits.storage.s3sync import is_permanent


def _s3() -> S3Hook:
    return S3Hook(load_settings().aws_conn_id)


def _source_s3() -> S3Hook:
    """Who lists an S3 source (``FRUITS_SOURCE_CONN_ID``: it may be another account's)."""
    return S3Hook(load_settings().source_conn_id)


def _permanent_fails(what: str, work: Callable[[], Any]) -> Any:
    """``work()``; an S3 error that retrying cannot help (no rights, no bucket) fails the
    task at once, naming ``what`` could not be done."""
    try:
        return work()
    except Exception as exc:
        if is_permanent(exc):
            raise AirflowFailException(f"cannot {what}: {exc}") from exc
        raise


def validate_params(
    params: Mapping[str, Any], logical_date: Any, compute: str | None = None
) -> dict:
    """The run's batch and parameters, checked, and the backend's settings (its
    ``preflight``): fails (no retry) naming what to change, before anything is uploaded
    or created. Remote backends read ``imagenet`` staged in the bucket, not this cache,
    and their nodes run a converted model, never Keras: its URI is the run's
    ``model_file`` (the local backend converts on its driver: no ``model_file``)."""
    from fruits.clusters.common.preflight import PreflightError, converted_model
    from fruits.params import (
        ParamError,
        check_runtime_on_nodes,
        check_weights_readable,
        validate,
    )
    from fruits.storage.batches import latest_batch

    settings = load_settings()
    try:
        run = validate(params, logical_date=logical_date, settings=settings,
                       latest=lambda source: latest_batch(source, _source_s3()))  # fmt: skip
        cluster = backend(compute or settings.compute)
        staged_in = settings.bucket if cluster.REMOTE else None
        if cluster.REMOTE:
            check_runtime_on_nodes(run.runtime)
        check_weights_readable(run.weights, run.model, _s3(), staged_in=staged_in)
        cluster.preflight(settings, run.as_dict())
        checked = run.as_dict()
        if cluster.REMOTE:
            checked["model_file"] = converted_model(settings, checked, _s3().get_conn())
    except (ParamError, PreflightError) as exc:
        raise AirflowFailException(str(exc)) from None
    print(f"batch {run.batch}: {checked}")
    return checked


# The PCA fits on at least two rows (fruits_spark.pca.linalg): a batch of one image would
# start a cluster and featurize only for reduce to fail.
MIN_IMAGES = 2


def find_batch(batch: str, source: str) -> int:
    """How many images the batch holds in the source; 0 (missing or empty) skips the rest,
    fewer than :data:`MIN_IMAGES` fails the run before anything is uploaded or created."""
    from fruits.storage.batches import batch_uri, count_batch

    where = batch_uri(source, batch)
    n = _permanent_fails(
        f"list the batch {where}", lambda: count_batch(source, batch, _source_s3())
    )
    if n == 0:
        print(f"no images in {where} (missing or empty batch): nothing to do")
    elif n < MIN_IMAGES:
        raise AirflowFailException(
            f"{where} holds {n} image; the PCA needs at least {MIN_IMAGES}: add images to "
            "the batch and run it again"
        )
    else:
        print(f"{n} images in {where}")
    return n


def upload_batch(batch: str, source: str) -> dict:
    """Mirror the batch to raw/batch=<date>/: a folder's images packed into a few Parquet
    shards, new or changed ones only; an S3 source copied server-side, object by object
    (never through the worker)."""
    from fruits.storage.batches import batch_uri, mirror_batch
    from fruits.storage.layout import raw_prefix

    settings = load_settings()
    mirrored = _permanent_fails(
        f"copy the batch {batch_uri(source, batch)} to s3://{settings.bucket}/{raw_prefix(batch)}",
        lambda: mirror_batch(source, batch, _s3(), _source_s3(), settings.bucket,
                             raw_prefix(batch), pack=settings.pack_batches),
    )  # fmt: skip
    return mirrored.as_dict()


def upload_code(run: dict, compute: str) -> dict:
    """Job code, bootstrap, requirements (and a weights file) to code/<version>/; returns
    their s3:// URIs."""
    from fruits.storage.code_bundle import upload_code as upload

    settings = load_settings()
    cluster = backend(compute)
    code = _permanent_fails(
        "upload the job code to S3",
        lambda: upload(_s3(), settings, run, ship_imagenet=cluster.REMOTE,
                       extra_files=cluster.code_files()),
    )  # fmt: skip
    print(f"code version {code['version']}: {code}")
    return code


def plan_run(
    run: dict, n_images: int, code: dict, compute: str, *, dag_id: str, run_id: str
) -> dict:
    """The cluster request, the steps (EMR's format, for every backend), the timeout, the
    run key and the code's version (the batch's provenance): the steps write
    runs/_staging/batch=<date>/<run key>/, never the published outputs, so nothing before
    publish_batch can spoil those."""
    from fruits.clusters.common.spark_steps import build_steps
    from fruits.storage.layout import new_run_key, progress_uri, staging_prefix

    settings = load_settings()
    run_key = new_run_key(run_id)
    print(f"staging: s3://{settings.bucket}/{staging_prefix(run['batch'], run_key)}")
    name = f"{dag_id} batch={run['batch']} {run_id}"[:256]
    timeout = settings.step_timeout(n_images)
    cluster = backend(compute).cluster_request(
        settings, name=name, code=code, run_key=run_key, timeout=timeout
    )
    steps = build_steps(
        bucket=settings.bucket, batch=run["batch"], run_key=run_key, code=code, run=run,
        progress_seconds=settings.progress_seconds,
    )  # fmt: skip
    progress = progress_uri(settings.bucket, run["batch"], run_key)
    return {"cluster": cluster, "steps": steps, "timeout": timeout, "run_key": run_key,
            "progress": progress, "code_version": code.get("version")}  # fmt: skip


def cluster_slot_blocker(ti: Any, dag_id: str, run_id: str) -> str | None:
    """Why this run may not take the cluster slot yet, or None (:mod:`fruits.cluster_slot`)."""
    from fruits.cluster_slot import GATE, RELEASES, blocker

    states = ti.get_task_states(dag_id=dag_id, task_ids=[GATE, *RELEASES])
    why = blocker(run_id, states, lambda r: ti.get_dagrun_state(dag_id, r) == "running")
    print(f"waiting: {why}" if why else "no other run holds a cluster: taking it")
    return why


def clear_leftovers(batch: str, run_key: str, compute: str) -> dict:
    """What earlier runs of the batch left when they failed or were killed before
    publishing: their staging prefixes, and what the backend says they left (local
    clusters whose owner process is gone). Runs holding the cluster slot, so no live run
    needs them."""
    from fruits.storage.publish import clear_staging

    settings = load_settings()
    cleared = clear_staging(_s3(), settings.bucket, batch, keep=run_key)
    reaped = backend(compute).clear_leftovers(settings)
    print(f"staging of earlier runs deleted: {cleared or 'none'}; "
          f"abandoned clusters stopped: {reaped or 'none'}")  # fmt: skip
    return {"staging": cleared, "clusters": reaped}


def publish_batch(
    batch: str, run_key: str, run_id: str, code_version: str | None = None
) -> tuple[dict, dict]:
    """Switch the run's staged outputs in as the batch's outputs (:mod:`fruits.storage.publish`):
    checked first (features, pca, report.json, row counts), _SUCCESS down, objects copied,
    stale ones deleted, _SUCCESS (run id, counts) written last, staging deleted. Returns
    the marker and the extra of the batch's asset event (with the features' provenance:
    :data:`fruits.storage.publish.PROVENANCE`, and the code bundle's version)."""
    from fruits.storage.layout import run_prefix
    from fruits.storage.publish import PROVENANCE, BatchNotPublished
    from fruits.storage.publish import publish_batch as publish

    settings = load_settings()
    try:
        record = {"run_id": run_id, **({"code_version": code_version} if code_version else {})}
        marker = publish(_s3(), settings.bucket, batch, run_key, record)
    except BatchNotPublished as exc:  # the steps ended: a retry cannot add outputs
        raise AirflowFailException(str(exc)) from None
    print(f"published: s3://{settings.bucket}/{run_prefix(batch)} ({marker})")
    extra = {
        "batch": batch,
        "pca": marker["outputs"]["pca"],
        "report": marker["outputs"]["report"],
        "rows": marker["rows"],
        "k": marker["k"],
        **{key: marker[key] for key in (*PROVENANCE, "code_version") if marker.get(key)},
    }
    return marker, extra


def summarize_run(batch: str) -> dict:
    """Rows, k, explained variance and rejected count of the published batch, read back
    from S3 as a reader would (its _SUCCESS required)."""
    from fruits.storage.publish import format_summary, run_summary

    summary = run_summary(_s3(), load_settings().bucket, batch, require_marker=True)
    print(format_summary(summary))
    return summary
