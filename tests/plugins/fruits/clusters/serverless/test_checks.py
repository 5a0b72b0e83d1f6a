"""The serverless backend's pre-flight, against moto in this process: each check fails
before anything is created, saying what to change."""

from __future__ import annotations

import json

import boto3
import pytest
from dag_support import BUCKET, REGION
from moto import mock_aws

from fruits.clusters.common.preflight import PreflightError
from fruits.clusters.serverless import checks
from fruits.clusters.serverless.request import archive_uri
from fruits.settings import load_settings
from fruits.storage.s3sync import split_uri

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/fruits-serverless:3.11"


@pytest.fixture
def clients():
    with mock_aws():
        kinds = ("s3", "iam", "ecr", "emr-serverless")
        yield {kind: boto3.client(kind, region_name=REGION) for kind in kinds}


def ready(clients, settings) -> None:
    """What a prepared account has: the bucket, the archive, the service-linked role."""
    clients["s3"].create_bucket(Bucket=BUCKET)
    if archive_uri(settings):  # none with a custom image
        bucket, key = split_uri(archive_uri(settings))
        clients["s3"].put_object(Bucket=bucket, Key=key, Body=b"archive")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"Service": checks.SERVICE_NAME}}]}  # fmt: skip
    clients["iam"].create_role(RoleName=checks.SERVICE_LINKED_ROLE,
                               AssumeRolePolicyDocument=json.dumps(trust))  # fmt: skip


def test_a_prepared_account_passes(clients):
    settings = load_settings({"FRUITS_BUCKET": BUCKET})
    ready(clients, settings)
    checks.preflight(settings, clients)


def test_a_missing_archive_names_the_command_and_the_settings(clients):
    settings = load_settings({"FRUITS_BUCKET": BUCKET})
    ready(clients, settings)
    clients["s3"].delete_object(Bucket=BUCKET, Key=split_uri(archive_uri(settings))[1])
    with pytest.raises(PreflightError) as caught:
        checks.preflight(settings, clients)
    message = str(caught.value)
    assert f"no Python archive at {archive_uri(settings)}" in message
    assert "make serverless-archive" in message and "FRUITS_SERVERLESS_ARCHIVE" in message


def test_a_missing_service_linked_role_says_how_to_create_it(clients):
    settings = load_settings({"FRUITS_BUCKET": BUCKET})
    ready(clients, settings)
    clients["iam"].delete_role(RoleName=checks.SERVICE_LINKED_ROLE)
    with pytest.raises(PreflightError, match="create-service-linked-role --aws-service-name "
                       "ops.emr-serverless.amazonaws.com"):  # fmt: skip
        checks.preflight(settings, clients)


def test_a_custom_image_must_be_in_ecr(clients):
    settings = load_settings({"FRUITS_BUCKET": BUCKET, "FRUITS_SERVERLESS_IMAGE": IMAGE})
    ready(clients, settings)
    with pytest.raises(PreflightError, match="no such image in ECR"):
        checks.preflight(settings, clients)
    ecr = clients["ecr"]
    ecr.create_repository(repositoryName="fruits-serverless")
    oci = "application/vnd.oci.image.manifest.v1+json"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": oci, "config": {"digest": "sha256:0"}})
    ecr.put_image(repositoryName="fruits-serverless", imageManifest=manifest, imageTag="3.11")
    checks.preflight(settings, clients)  # no archive needed with an image
    with pytest.raises(PreflightError, match="from Amazon ECR only"):
        checks.image("docker.io/library/python:3.11", ecr)


def test_a_named_application_must_be_live_and_emr_7(clients):
    app = clients["emr-serverless"].create_application(
        name="warm", releaseLabel="emr-6.15.0", type="SPARK"
    )["applicationId"]
    env = {"FRUITS_BUCKET": BUCKET, "FRUITS_SERVERLESS_APPLICATION_ID": app}
    settings = load_settings(env)
    ready(clients, settings)
    with pytest.raises(PreflightError, match="emr-7.x"):
        checks.preflight(settings, clients)
    with pytest.raises(PreflightError, match="no such application"):
        checks.named_application("00nothere", clients["emr-serverless"])
