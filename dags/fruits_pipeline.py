"""
### fruits_pipeline: fruit photos -> CNN features -> PCA, on a Spark cluster

Every day, the batch `<source>/<YYYY-MM-DD>/<label>/<image>` (`FRUITS_INCOMING`: a
folder, `data/incoming` by default, or `s3://bucket/prefix`, copied server-side) goes to
the pipeline's bucket, a Spark cluster runs **featurize** (a CNN without its top;
`runtime=auto` runs each model on its faster runtime, LiteRT or Keras) and **reduce**
(PCA), `publish_batch` switches the results in as
`s3://<bucket>/runs/batch=<date>/`, and the cluster is removed whatever happened.

**Cluster** (`FRUITS_COMPUTE`, read when the DAG is parsed): `local` (default; a Spark
standalone master and worker on the Airflow worker, 127.0.0.1), `emr` (Amazon EMR 7,
`plugins/fruits/clusters/emr/`), `ec2` (a primary and workers on EC2 that install
Spark themselves; steps through SSM Run Command) or `serverless` (EMR Serverless: one
job run per step, no cluster to size). Every backend has the same tasks:
`create_job_flow` -> `add_steps` -> `wait_for_step` (it logs the steps' progress) ->
`remove_cluster` (a teardown: it runs after any failure; a failed step still fails the run).

**Parameters**: batch date (empty: the run's logical date; a manual run without one
takes the latest batch), source (overrides `FRUITS_INCOMING` for one run), model,
runtime (`auto`, `litert` or `keras`), precision (`fp32`, or `int8` for mobilenet: faster,
fidelity measured, docs/precision.md), weights (`imagenet`, `random` for demos, or the
s3:// URI of a `.h5`), variance, image size. Bad values fail
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

from fruits.clusters import backend
from fruits.params import trigger_form
from fruits.settings import load_settings

DAG_ID = "fruits_pipeline"
SETTINGS = load_settings()  # environment only: no network, no Variables
# What downstream DAGs schedule on (``schedule=[PCA_ASSET]``): one event per published
# batch, whose extra names the batch, its pca/ and report/ URIs and what made the features.
PCA_ASSET = Asset(
    name="fruits_pca",
    uri=f"s3://{SETTINGS.bucket}/runs/pca",
    group="fruits",
    extra={"layout": "runs/batch=<YYYY-MM-DD>/pca/ Parquet path, label, pca"},
)
CLUSTER_SLOT_TIMEOUT = 24 * 3600  # seconds a run may wait for another run's cluster
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
    # Each task's body is in fruits.tasks, imported when the task runs, not when parsed.
    @task(multiple_outputs=True)
    def validate_params(**context) -> dict:
        """The run's batch and parameters, checked; fails (no retry) naming a bad one."""
        from fruits import tasks

        return tasks.validate_params(
            context["params"], context["dag_run"].logical_date, compute=SETTINGS.compute
        )

    @task.short_circuit
    def find_batch(batch: str, source: str) -> int:
        """How many images the batch holds; 0 (missing or empty) skips the rest, 1 fails."""
        from fruits import tasks

        return tasks.find_batch(batch, source)

    create_bucket = S3CreateBucketOperator(
        task_id="create_bucket", bucket_name=SETTINGS.bucket, aws_conn_id=SETTINGS.aws_conn_id
    )

    @task
    def upload_batch(batch: str, source: str) -> dict:
        """Mirror the batch to raw/batch=<date>/: a folder packed into Parquet shards, new or
        changed ones only (server-side copies from an S3 source)."""
        from fruits import tasks

        return tasks.upload_batch(batch, source)

    @task
    def upload_code(run: dict, compute: str) -> dict:
        """Job code, bootstrap, requirements (and a weights file) to code/<version>/."""
        from fruits import tasks

        return tasks.upload_code(run, compute)

    @task(multiple_outputs=True)
    def plan_run(run: dict, n_images: int, code: dict, compute: str, **context) -> dict:
        """The cluster request, the steps, the timeout and the run's staging key."""
        from fruits import tasks

        return tasks.plan_run(run, n_images, code, compute, dag_id=DAG_ID,
                              run_id=context["run_id"])  # fmt: skip

    run = validate_params()
    n_images = find_batch(run["batch"], run["source"])
    batch_uploaded = upload_batch(run["batch"], run["source"])
    # the backend is the one this DAG was parsed with, whatever the worker's environment
    code = upload_code(run, compute=SETTINGS.compute)
    plan = plan_run(run, n_images, code, compute=SETTINGS.compute)

    @task.sensor(
        task_id="wait_for_cluster_slot",
        poke_interval=SETTINGS.poke_interval,
        timeout=CLUSTER_SLOT_TIMEOUT,
        mode=SETTINGS.sensor_mode,
    )
    def wait_for_cluster_slot(**context):
        """One cluster at a time across runs, backfills included (fruits.cluster_slot)."""
        from airflow.sdk import PokeReturnValue

        from fruits import tasks

        why = tasks.cluster_slot_blocker(context["ti"], DAG_ID, context["run_id"])
        return PokeReturnValue(is_done=why is None)

    cluster_slot = wait_for_cluster_slot()

    @task
    def clear_leftovers(batch: str, run_key: str, compute: str) -> dict:
        """Staging of earlier runs of the batch, and clusters runs killed before their
        teardown left (fruits.tasks.clear_leftovers)."""
        from fruits import tasks

        return tasks.clear_leftovers(batch, run_key, compute)

    leftovers = clear_leftovers(run["batch"], plan["run_key"], compute=SETTINGS.compute)

    # the backend's tasks: a setup, a body and a teardown, with the same task ids
    # (create_job_flow ... wait_for_step, remove_cluster) whatever FRUITS_COMPUTE names
    cluster = backend(SETTINGS.compute).cluster_tasks(SETTINGS, plan)

    @task(outlets=[PCA_ASSET])
    def publish_batch(batch: str, run_key: str, code_version: str, **context) -> dict:
        """Switch the run's staged outputs in as the batch's outputs (fruits.storage.publish),
        _SUCCESS last; then announce the batch to the DAGs scheduled on PCA_ASSET, with what
        made its features (model, weights, size, runtime, precision, code version)."""
        from fruits import tasks

        marker, extra = tasks.publish_batch(batch, run_key, context["run_id"], code_version)
        context["outlet_events"][PCA_ASSET].extra = extra
        return marker

    @task
    def summarize_run(batch: str) -> dict:
        """Rows, k, explained variance and rejected count of the published batch."""
        from fruits import tasks

        return tasks.summarize_run(batch)

    published = publish_batch(run["batch"], plan["run_key"], plan["code_version"])
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
        # the cluster's setup, then its body: featurize, then reduce, into the run's
        # staging prefix
        *cluster.in_order,
        # teardown (runs after any failure; a failed step still fails the run), and the
        # switch of the staged outputs in, then the summary
        [cluster.teardown.as_teardown(setups=list(cluster.setup)), published],
    )
    chain(published, summary)


fruits_pipeline()
