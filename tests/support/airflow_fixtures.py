"""Fixtures of the tests that need Airflow or AWS: an Airflow home of our own (SQLite),
moto's server on loopback, the AWS connection from ``AIRFLOW_CONN_AWS_DEFAULT``, an S3
hook, and the DAG parsed per backend. The conftest.py of tests/plugins, tests/dags and
tests/e2e import them (``FIXTURES``).

Airflow reads its configuration when first imported, so the environment is set here,
at import time, before any test module imports Airflow.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dag_support import (
    BUCKET,
    EARLIER_REPORT,
    EARLIER_RUN,
    REGION,
    ROOT,
    Ec2NodeDriver,
    EmrStepDriver,
    snapshot,
)
from serverless_jobs import ServerlessJobDriver, patch_moto

# what a conftest.py gets with ``from airflow_fixtures import *``
__all__ = [
    "airflow_db", "aws", "calls", "earlier_outputs", "ec2_nodes", "emr_steps", "fruits_env", "hook",
    "load_dag", "moto", "moto_server", "serverless_account", "serverless_jobs", "staged_weights",
]  # fmt: skip

_AIRFLOW_WAS_IMPORTED = "airflow" in sys.modules  # then our AIRFLOW_HOME comes too late

_HOME = Path(tempfile.mkdtemp(prefix="fruits-airflow-home-"))
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ.update(
    AIRFLOW_HOME=str(_HOME),
    AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
    AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
    AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
    # never a real AWS account, whatever the machine has configured
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    AWS_EC2_METADATA_DISABLED="true",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION=REGION,
    SPARK_LOCAL_IP="127.0.0.1",
)
os.environ.pop("AWS_PROFILE", None)
for _name in [k for k in os.environ if k.startswith("FRUITS_")]:
    os.environ.pop(_name)

# Import Airflow now, with that environment: it configures its logging once, bound to
# the session's output capture (not to a capfd of one test, closed after it).
import airflow  # noqa: E402, F401


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server on 127.0.0.1 (a port the OS picks), in this process, so tests can
    set EMR step states in its backend; stopped at the end of the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://127.0.0.1:{port}"
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": url, "region_name": REGION},
        }
    )
    yield url
    server.stop()


@pytest.fixture
def moto(moto_server) -> str:
    """A clean moto (no buckets, no clusters) for each test."""
    req = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).close()
    return moto_server


@pytest.fixture
def aws(moto):
    """boto3 clients against moto, for the tests' own checks."""
    import boto3

    kwargs = dict(
        endpoint_url=moto,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    class Clients:
        s3 = boto3.client("s3", **kwargs)
        emr = boto3.client("emr", **kwargs)
        ec2 = boto3.client("ec2", **kwargs)
        ssm = boto3.client("ssm", **kwargs)
        iam = boto3.client("iam", **kwargs)
        serverless = boto3.client("emr-serverless", **kwargs)

        def keys(self, prefix: str = "") -> list[str]:
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            return [o["Key"] for page in pages for o in page.get("Contents", [])]

        def read(self, key: str) -> bytes:
            return self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

        def clusters(self) -> list[dict]:
            return self.emr.list_clusters()["Clusters"]

        def packed(self, prefix: str) -> dict[str, bytes]:
            """A packed batch's images (``<prefix>_packed/*.parquet``): name -> bytes; it
            fails if anything else is under the prefix or an image is there twice."""
            import io

            import pyarrow.parquet as pq

            images: dict[str, bytes] = {}
            for key in self.keys(prefix):
                assert key.startswith(f"{prefix}_packed/") and key.endswith(".parquet"), key
                for row in pq.read_table(io.BytesIO(self.read(key))).to_pylist():
                    assert row["name"] not in images, f"{row['name']} packed twice"
                    images[row["name"]] = row["content"]
            return images

    return Clients()


@pytest.fixture
def calls(monkeypatch) -> dict[str, list[dict]]:
    """The AWS requests as they leave boto3, by operation (moto may not keep them all)."""
    from botocore.client import BaseClient

    sent: dict[str, list[dict]] = {}
    real_call = BaseClient._make_api_call

    def record(self, operation, params):
        sent.setdefault(operation, []).append(params)
        return real_call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    return sent


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database in the session's Airflow home."""
    if _AIRFLOW_WAS_IMPORTED:
        pytest.fail(
            "Airflow was imported before tests/support/airflow_fixtures.py set AIRFLOW_HOME"
        )
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return _HOME


@pytest.fixture
def fruits_env(monkeypatch, tmp_path) -> Path:
    """FRUITS_* settings for a test: its own incoming and scratch folders, quick polling."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for name, value in {
        "FRUITS_BUCKET": BUCKET,
        "FRUITS_INCOMING": str(incoming),
        "FRUITS_SCRATCH": str(tmp_path / "scratch"),
        "FRUITS_POKE_INTERVAL": "1",
        "FRUITS_EMR_LOG_WAIT": "10",
        "FRUITS_SERVERLESS_LOG_WAIT": "10",
        "FRUITS_STEP_TIMEOUT_BASE": "600",
        "FRUITS_LOCAL_CORES": "2",
        "FRUITS_LOCAL_MEMORY": "1g",
        "FRUITS_LOCAL_DRIVER_MEMORY": "480m",  # not the default: test_local_run sees it used
    }.items():
        monkeypatch.setenv(name, value)
    return incoming


@pytest.fixture
def load_dag(monkeypatch) -> Callable:
    """Parse dags/ with FRUITS_COMPUTE set; returns the fruits_pipeline DAG."""

    def load(compute: str):
        from airflow.dag_processing.dagbag import DagBag

        monkeypatch.setenv("FRUITS_COMPUTE", compute)
        bag = DagBag(dag_folder=str(ROOT / "dags"))
        assert bag.import_errors == {}, bag.import_errors
        return bag.dags["fruits_pipeline"]

    return load


def _drivers(make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """``start(...)``: a driver made by ``make(...)``, its thread started; at the end of
    the test every driver is stopped and its errors fail the test."""
    drivers = []

    def start(*args: Any, **kwargs: Any) -> Any:
        driver = make(*args, **kwargs)
        driver.thread.start()
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.stop.set()
        driver.thread.join(timeout=5)
        assert not driver.errors, driver.errors


@pytest.fixture
def emr_steps(aws) -> Iterator[Callable[[str], EmrStepDriver]]:
    """Play EMR's steps (moto never finishes one; the success path runs each step's real
    spark-submit here): ``emr_steps(policy)``."""
    yield from _drivers(lambda policy: EmrStepDriver(aws.s3, policy))


@pytest.fixture
def ec2_nodes(aws) -> Iterator[Callable[..., Ec2NodeDriver]]:
    """Play the ec2 backend's nodes (moto boots nothing): ``ec2_nodes(policy, steps)``;
    the nodes' instance profile exists in moto's IAM, as infra/fruits-pipeline.yaml
    makes it."""
    aws.iam.create_instance_profile(InstanceProfileName="fruits-ec2-node-role")
    yield from _drivers(lambda policy, steps="complete": Ec2NodeDriver(aws, policy, steps))


@pytest.fixture
def serverless_account(aws, fruits_env, monkeypatch) -> str:
    """What a serverless run needs of the account, as a real one would have it: moto's
    gaps worked around (tests/support/serverless_jobs.py), EMR Serverless's service-linked
    role, the jobs' runtime role, and a stand-in Python archive where the settings look
    for it (its URI returned; nothing unpacks it: the jobs run on this host's Python)."""
    from fruits.clusters.serverless.checks import SERVICE_LINKED_ROLE, SERVICE_NAME
    from fruits.clusters.serverless.request import archive_uri
    from fruits.settings import load_settings
    from fruits.storage.s3sync import split_uri

    patch_moto(monkeypatch)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"Service": SERVICE_NAME}}]}  # fmt: skip
    aws.iam.create_role(RoleName=SERVICE_LINKED_ROLE, Path=f"/aws-service-role/{SERVICE_NAME}/",
                        AssumeRolePolicyDocument=json.dumps(trust))  # fmt: skip
    job_trust = {
        **trust,
        "Statement": [
            {**trust["Statement"][0], "Principal": {"Service": "emr-serverless.amazonaws.com"}}
        ],
    }
    aws.iam.create_role(RoleName="fruits-serverless-job-role",  # as the stack names it
                        AssumeRolePolicyDocument=json.dumps(job_trust))  # fmt: skip
    uri = archive_uri(load_settings())
    bucket, key = split_uri(uri)
    if bucket not in {b["Name"] for b in aws.s3.list_buckets()["Buckets"]}:
        aws.s3.create_bucket(Bucket=bucket)
    aws.s3.put_object(Bucket=bucket, Key=key, Body=b"stand-in for the Python archive")
    return uri


@pytest.fixture
def serverless_jobs(aws, serverless_account) -> Iterator[Callable[..., ServerlessJobDriver]]:
    """Play EMR Serverless's workers (moto runs no job): ``serverless_jobs(policy)``."""
    yield from _drivers(lambda policy="complete": ServerlessJobDriver(aws.s3, policy))


@pytest.fixture
def earlier_outputs(aws) -> dict[str, bytes]:
    """A previous run's published outputs of the batch (marker included), as S3 has them:
    the fault tests check that a failed run leaves them byte for byte."""
    aws.s3.create_bucket(Bucket=BUCKET)
    for key, body in {
        EARLIER_RUN + "features/part-00000-earlier-c000.snappy.parquet": b"earlier features",
        EARLIER_RUN + "features/_SUCCESS": b"",
        EARLIER_RUN + "rejected/part-00000-earlier-c000.snappy.parquet": b"earlier rejected",
        EARLIER_RUN + "pca/part-00000-earlier-c000.snappy.parquet": b"earlier pca",
        EARLIER_RUN + "report/report.json": json.dumps(EARLIER_REPORT).encode(),
        EARLIER_RUN + "_SUCCESS": b'{"run_id": "earlier"}',
    }.items():
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return snapshot(aws)


@pytest.fixture
def hook(moto, aws):
    """Airflow's S3Hook on moto, with the test bucket."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    aws.s3.create_bucket(Bucket=BUCKET)
    return S3Hook(aws_conn_id="aws_default")


@pytest.fixture
def staged_weights(aws, tmp_path, monkeypatch, request) -> Callable[..., str]:
    """``staged_weights(model, image_size=64)``: a stand-in ImageNet file for ``model``,
    staged to the bucket from an operator's Keras cache as ``make stage-weights`` does,
    with its converted model at ``image_size`` where the ``staged_model`` fixture is
    available (tests/support/model_fixtures.py: a real conversion, of seeded random
    weights, since the steps of a played cluster run it); returns the weights' URI. The
    Airflow worker's own cache (``KERAS_HOME``) is empty, as on a fresh MWAA worker."""
    import hashlib

    from fruits.settings import rules
    from fruits.storage.weights import stage

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "worker-keras"))
    cache = tmp_path / "operator-keras" / "models"
    cache.mkdir(parents=True)
    if BUCKET not in {b["Name"] for b in aws.s3.list_buckets()["Buckets"]}:
        aws.s3.create_bucket(Bucket=BUCKET)

    def put(model: str = "mobilenetv2", image_size: int = 64) -> str:
        data = f"stand-in {model}".encode()
        (cache / rules.MODELS[model].imagenet_file).write_bytes(data)
        (staged,) = stage(aws.s3, BUCKET, [model], cache)
        try:
            converted = request.getfixturevalue("staged_model")
        except pytest.FixtureLookupError:
            return staged.uri
        # its converted model: the real conversion of random weights, which the steps run
        converted(model, image_size, hashlib.sha256(data).hexdigest())
        return staged.uri

    return put
