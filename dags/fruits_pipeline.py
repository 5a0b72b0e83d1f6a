"""
### fruits_pipeline: fruit photos -> CNN features -> PCA, on a Spark cluster

Every day, the batch `data/incoming/<YYYY-MM-DD>/<label>/<image>` goes to S3, a Spark
cluster runs **featurize** (a CNN without its top, converted once and run by LiteRT) and
**reduce** (PCA), `publish_batch` switches the results in as
`s3://<bucket>/runs/batch=<date>/`, and the cluster is removed whatever happened.

**Cluster** (`FRUITS_COMPUTE`, read when the DAG is parsed): `local` (default; a Spark
standalone master and worker on the Airflow worker, 127.0.0.1), `emr` (Amazon EMR 7,
`plugins/fruits/emr/job_flow.json`) or `ec2` (a primary and workers on EC2 that install
Spark themselves; steps through SSM Run Command). Every backend has the same tasks:
`create_job_flow` -> `add_steps` -> `wait_for_step` (it logs the steps' progress) ->
`remove_cluster` (a teardown: it runs after any failure; a failed step still fails the run).

**Parameters**: batch date (empty: the run's logical date; a manual run without one
takes the latest batch folder), model, runtime (`auto`, `litert` or `keras`), weights
(`imagenet`, `random` for demos, or the s3:// URI of a `.h5`), variance, image size. Bad values fail
`validate_params`, naming the parameter, before any cluster exists. A missing or
empty batch stops the run at `find_batch`: success, the rest skipped.

**Reruns and readers**: the steps write `runs/_staging/batch=<date>/<run key>/`; only
`publish_batch` switches checked outputs in as `runs/batch=<date>/`, writing `_SUCCESS`
last: trust a batch only while `_SUCCESS` exists. A run that fails or is killed before
publishing leaves the earlier outputs untouched; re-running a batch replaces its outputs.
To rerun a killed `airflow dags test`, run the same command again.

Daily over data intervals: the run after midnight UTC processes the day that ended.
Backfill: `airflow backfill create --dag-id fruits_pipeline --from-date D1 --to-date D2`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.amazon.aws.operators.s3 import S3CreateBucketOperator
from airflow.sdk import Asset, CronDataIntervalTimetable, chain, dag, task

from fruits.backends import backend
from fruits.config import load_settings
from fruits.params import trigger_form

DAG_ID = "fruits_pipeline"
SETTINGS = load_settings()  # environment only: no network, no Variables
# What downstream DAGs schedule on (``schedule=[PCA_ASSET]``): one event per published
# batch, whose extra names the batch and its pca/ and report/ URIs.
PCA_ASSET = Asset(
    name="fruits_pca",
    uri=f"s3://{SETTINGS.bucket}/runs/pca",
    group="fruits",
    extra={"layout": "runs/batch=<YYYY-MM-DD>/pca/ Parquet path, label, pca"},
)
DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
}


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=trigger_form(SETTINGS),
    tags=["fruits", "spark", f"compute:{SETTINGS.compute}"],
    doc_md=__doc__,
)
def fruits_pipeline():
    @task(multiple_outputs=True)
    def validate_params(**context) -> dict:
        """The run's batch and parameters, checked; fails (no retry) naming a bad one."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk.exceptions import AirflowFailException

        from fruits.params import ParamError, check_weights_readable, validate

        settings = load_settings()
        try:
            run = validate(
                context["params"], logical_date=context["dag_run"].logical_date, settings=settings
            )
            check_weights_readable(run.weights, run.model, S3Hook(settings.aws_conn_id))
        except ParamError as exc:
            raise AirflowFailException(str(exc)) from None
        print(f"batch {run.batch}: {run.as_dict()}")
        return run.as_dict()

    @task.short_circuit
    def find_batch(batch: str) -> int:
        """How many images the batch folder holds; 0 (missing or empty) skips the rest."""
        from fruits.jobcode import count_images

        folder = load_settings().incoming / batch
        n = count_images(folder)
        if n == 0:
            print(f"no images in {folder} (missing or empty batch): nothing to do")
        else:
            print(f"{n} images in {folder}")
        return n

    create_bucket = S3CreateBucketOperator(
        task_id="create_bucket", bucket_name=SETTINGS.bucket, aws_conn_id=SETTINGS.aws_conn_id
    )

    @task
    def upload_batch(batch: str) -> dict:
        """Mirror the batch folder to raw/batch=<date>/: new or changed files only."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk.exceptions import AirflowFailException

        from fruits.layout import raw_prefix
        from fruits.s3sync import is_permanent, upload_folder

        settings = load_settings()
        hook = S3Hook(settings.aws_conn_id)
        try:
            return upload_folder(
                hook, settings.incoming / batch, settings.bucket, raw_prefix(batch)
            ).as_dict()
        except Exception as exc:
            if is_permanent(exc):  # no rights, no bucket: retrying cannot help
                raise AirflowFailException(f"cannot upload the batch to S3: {exc}") from exc
            raise

    @task
    def upload_code(run: dict, compute: str) -> dict:
        """Job code, bootstrap, requirements (and a weights file) to code/<version>/;
        returns their s3:// URIs."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk.exceptions import AirflowFailException

        from fruits.jobcode import upload_code
        from fruits.s3sync import is_permanent

        settings = load_settings()
        cluster = backend(compute)
        try:
            code = upload_code(
                S3Hook(settings.aws_conn_id),
                settings,
                run,
                ship_imagenet=cluster.REMOTE,
                extra_files=cluster.code_files(),
            )
        except Exception as exc:
            if is_permanent(exc):
                raise AirflowFailException(f"cannot upload the job code to S3: {exc}") from exc
            raise
        print(f"code version {code['version']}: {code}")
        return code

    @task(multiple_outputs=True)
    def plan_run(run: dict, n_images: int, code: dict, compute: str, **context) -> dict:
        """The cluster request, the steps (EMR's format, for both backends), the timeout,
        and the run key: the steps write runs/_staging/batch=<date>/<run key>/, never the
        published outputs, so nothing before publish_batch can spoil those."""
        from fruits.layout import new_run_key, progress_uri, staging_prefix
        from fruits.steps import build_steps

        settings = load_settings()
        run_key = new_run_key(context["run_id"])
        print(f"staging: s3://{settings.bucket}/{staging_prefix(run['batch'], run_key)}")
        name = f"{DAG_ID} batch={run['batch']} {context['run_id']}"[:256]
        timeout = settings.step_timeout(n_images)
        cluster = backend(compute).cluster_request(
            settings, name=name, code=code, run_key=run_key, timeout=timeout
        )
        steps = build_steps(
            bucket=settings.bucket, batch=run["batch"], run_key=run_key, code=code, run=run,
            progress_seconds=settings.progress_seconds,
        )  # fmt: skip
        progress = progress_uri(settings.bucket, run["batch"], run_key)
        return {"job_flow": cluster, "steps": steps, "timeout": timeout, "run_key": run_key,
                "progress": progress}  # fmt: skip

    run = validate_params()
    n_images = find_batch(run["batch"])
    batch_uploaded = upload_batch(run["batch"])
    # the backend is the one this DAG was parsed with, whatever the worker's environment
    code = upload_code(run, compute=SETTINGS.compute)
    plan = plan_run(run, n_images, code, compute=SETTINGS.compute)

    @task.sensor(
        task_id="wait_for_cluster_slot",
        poke_interval=SETTINGS.poke_interval,
        timeout=24 * 3600,
        mode=SETTINGS.sensor_mode,
    )
    def wait_for_cluster_slot(**context):
        """One cluster at a time across runs, backfills included (fruits.cluster_slot)."""
        from airflow.sdk import PokeReturnValue

        from fruits.cluster_slot import GATE, RELEASES, blocker

        ti = context["ti"]
        states = ti.get_task_states(dag_id=DAG_ID, task_ids=[GATE, *RELEASES])
        why = blocker(
            context["run_id"], states, lambda r: ti.get_dagrun_state(DAG_ID, r) == "running"
        )
        print(f"waiting: {why}" if why else "no other run holds a cluster: taking it")
        return PokeReturnValue(is_done=why is None)

    cluster_slot = wait_for_cluster_slot()

    @task
    def clear_leftovers(batch: str, run_key: str, compute: str) -> dict:
        """What earlier runs of the batch left when they failed or were killed before
        publishing: their staging prefixes, and what the backend says they left (local
        clusters whose owner process is gone). Runs holding the cluster slot, so no live
        run needs them."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fruits.publish import clear_staging

        settings = load_settings()
        hook = S3Hook(settings.aws_conn_id)
        cleared = clear_staging(hook, settings.bucket, batch, keep=run_key)
        reaped = backend(compute).clear_leftovers(settings)
        print(f"staging of earlier runs deleted: {cleared or 'none'}; "
              f"abandoned clusters stopped: {reaped or 'none'}")  # fmt: skip
        return {"staging": cleared, "clusters": reaped}

    leftovers = clear_leftovers(run["batch"], plan["run_key"], compute=SETTINGS.compute)

    # the backend's four tasks: the same ids and graph whatever FRUITS_COMPUTE names
    cluster = backend(SETTINGS.compute).cluster_tasks(SETTINGS, plan)

    @task(outlets=[PCA_ASSET])
    def publish_batch(batch: str, run_key: str, **context) -> dict:
        """Switch the run's staged outputs in as the batch's outputs (fruits.publish):
        checked first (features, pca, report.json, row counts), _SUCCESS down, objects
        copied, stale ones deleted, _SUCCESS (run id, counts) written last, staging
        deleted. Then announces the batch to the DAGs scheduled on PCA_ASSET."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk.exceptions import AirflowFailException

        from fruits.layout import run_prefix
        from fruits.publish import BatchNotPublished, publish_batch

        settings = load_settings()
        hook = S3Hook(settings.aws_conn_id)
        try:
            marker = publish_batch(
                hook, settings.bucket, batch, run_key, {"run_id": context["run_id"]}
            )
        except BatchNotPublished as exc:  # the steps ended: a retry cannot add outputs
            raise AirflowFailException(str(exc)) from None
        print(f"published: s3://{settings.bucket}/{run_prefix(batch)} ({marker})")
        context["outlet_events"][PCA_ASSET].extra = {
            "batch": batch,
            "pca": marker["outputs"]["pca"],
            "report": marker["outputs"]["report"],
            "rows": marker["rows"],
            "k": marker["k"],
        }
        return marker

    @task
    def summarize_run(batch: str) -> dict:
        """Rows, k, explained variance and rejected count of the published batch, read
        back from S3 as a reader would (its _SUCCESS required)."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fruits.publish import format_summary, run_summary

        settings = load_settings()
        hook = S3Hook(settings.aws_conn_id)
        summary = run_summary(hook, settings.bucket, batch, require_marker=True)
        print(format_summary(summary))
        return summary

    published = publish_batch(run["batch"], plan["run_key"])
    summary = summarize_run(run["batch"])

    chain(
        # setup: check parameters and batch, put batch and code in S3, start the cluster
        run,
        n_images,
        create_bucket,
        [batch_uploaded, code],
        plan,
        cluster_slot,
        leftovers,
        cluster.create_job_flow,
        # body: featurize, then reduce, on the cluster, into the run's staging prefix
        cluster.add_steps,
        cluster.wait_for_step,
        # teardown (runs after any failure; a failed step still fails the run), and the
        # switch of the staged outputs in, then the summary
        [cluster.remove_cluster.as_teardown(setups=cluster.create_job_flow), published],
    )
    chain(published, summary)


fruits_pipeline()
