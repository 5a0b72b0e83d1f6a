"""The ``serverless`` backend's pre-flight (``validate_params``, before anything is
uploaded or created): each check only looks, and says what to change when it fails. A
check the connection is not allowed to make is skipped with a warning, as the other
backends' are (:mod:`fruits.clusters.common.preflight`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fruits.clusters.common.preflight import DENIED, PreflightError, error_code
from fruits.settings import Settings

SERVICE_LINKED_ROLE = "AWSServiceRoleForAmazonEMRServerless"
SERVICE_NAME = "ops.emr-serverless.amazonaws.com"
ARCHIVE_COMMAND = "make serverless-archive"  # docs/backends.md, "serverless"
_ECR_IMAGE = re.compile(
    r"[^/]+\.dkr\.ecr\.[^/]+\.amazonaws\.com[^/]*/(?P<repo>[^:@]+)[:@](?P<ref>.+)"
)


def _client(settings: Settings, kind: str) -> Any:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=settings.aws_conn_id, client_type=kind).conn


def preflight(settings: Settings, clients: dict[str, Any] | None = None) -> None:
    """The archive or image, the service-linked role, a named application."""
    clients = clients or {}

    def client(kind: str) -> Any:
        return clients.get(kind) or _client(settings, kind)

    if settings.serverless.image:
        image(settings.serverless.image, client("ecr"))
    else:
        archive(settings, client("s3"))
    service_linked_role(client("iam"))
    if settings.serverless.application_id:
        named_application(settings.serverless.application_id, client("emr-serverless"))


def _absent(look: Callable[[], bool], what: str, absent: tuple[str, ...]) -> str | None:
    """``look()`` (True: found); the reason when ``what`` is not there, None when it is or
    when the connection may not look (then skipped, with a warning)."""
    from botocore.exceptions import ClientError

    try:
        return None if look() else "not found"
    except ClientError as exc:
        code = error_code(exc)
        if code in DENIED or code == "403":
            print(f"preflight: cannot check {what} ({code}): skipped")
            return None
        if code not in absent:
            raise  # throttling, a network error: the task's retries may help
        return code


def archive(settings: Settings, s3: Any) -> None:
    """The Python archive the jobs unpack (``spark.archives``) is in S3."""
    from fruits.clusters.serverless.request import archive_uri
    from fruits.storage.s3sync import split_uri

    uri = archive_uri(settings)
    bucket, key = split_uri(uri)
    gone = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")
    if not _absent(lambda: bool(s3.head_object(Bucket=bucket, Key=key)), uri, gone):
        return
    raise PreflightError(
        f"no Python archive at {uri}: EMR Serverless 7 runs Python 3.9 and the jobs need "
        f"the 3.11 archive. Build and upload it where Docker runs: `{ARCHIVE_COMMAND} "
        f"FRUITS_BUCKET={settings.bucket}` (docs/backends.md), or set "
        "FRUITS_SERVERLESS_ARCHIVE to the s3:// URI of yours, or FRUITS_SERVERLESS_IMAGE "
        "to a custom image"
    )


def image(uri: str, ecr_client: Any) -> None:
    """A custom image in ECR exists (another registry's cannot be checked: EMR Serverless
    takes images from ECR only)."""
    found = _ECR_IMAGE.fullmatch(uri)
    if not found:
        raise PreflightError(
            f"FRUITS_SERVERLESS_IMAGE={uri}: EMR Serverless runs images from Amazon ECR "
            f"only: <account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>"
        )
    ref = found["ref"]
    ident = {"imageDigest": ref} if ref.startswith("sha256:") else {"imageTag": ref}

    def look() -> bool:
        got = ecr_client.batch_get_image(repositoryName=found["repo"], imageIds=[ident])
        return bool(got.get("images"))

    why = _absent(look, f"the image {uri}", ("RepositoryNotFoundException",))
    if why:
        raise PreflightError(
            f"FRUITS_SERVERLESS_IMAGE={uri}: no such image in ECR ({why}): push it, or set "
            "FRUITS_SERVERLESS_IMAGE to one that exists"
        )


def service_linked_role(iam_client: Any) -> None:
    """EMR Serverless acts through its service-linked role; the run does not create it
    (that needs ``iam:CreateServiceLinkedRole``, which the Airflow role does not have)."""
    look = lambda: bool(iam_client.get_role(RoleName=SERVICE_LINKED_ROLE))  # noqa: E731
    if _absent(look, f"the role {SERVICE_LINKED_ROLE}", ("NoSuchEntity",)):
        raise PreflightError(
            f"the account has no {SERVICE_LINKED_ROLE}, without which EMR Serverless cannot "
            f"run an application. Create it once, as an administrator: aws iam "
            f"create-service-linked-role --aws-service-name {SERVICE_NAME} "
            "(docs/deploy-aws.md)"
        )


def named_application(application_id: str, client: Any) -> None:
    """``FRUITS_SERVERLESS_APPLICATION_ID`` names a live application."""
    from botocore.exceptions import ClientError

    setting = "FRUITS_SERVERLESS_APPLICATION_ID"
    try:
        app = client.get_application(applicationId=application_id)["application"]
    except ClientError as exc:
        code = error_code(exc)
        if code in DENIED:
            print(f"preflight: cannot check {setting}={application_id} ({code}): skipped")
            return
        if code not in ("ResourceNotFoundException", "ValidationException"):
            raise
        raise PreflightError(
            f"{setting}={application_id}: no such application in the connection's region: "
            "set the id of a live application, or leave it empty for one per run"
        ) from None
    if app["state"] == "TERMINATED":
        raise PreflightError(
            f"{setting}={application_id} is TERMINATED: set the id of a live application, "
            "or leave it empty for one per run"
        )
    if not str(app.get("releaseLabel", "")).startswith("emr-7."):
        raise PreflightError(
            f"{setting}={application_id} runs {app.get('releaseLabel')}: the jobs need an "
            "emr-7.x application (Spark 3.5)"
        )
