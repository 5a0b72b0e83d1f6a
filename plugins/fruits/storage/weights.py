"""Staged ImageNet weights: where the cloud backends read them, and how they get there.

A scheduled run on ``emr`` or ``ec2`` must not depend on the Airflow worker's Keras cache
(a fresh MWAA worker has none, and nothing here can download Keras' files). An operator
stages the no-top files once, from a machine whose cache holds them (``make weights``,
or Keras with internet), with ``make stage-weights``: they go to
``s3://<bucket>/models/<model>/<file>``, and ``weights=imagenet`` means that object there.

No TensorFlow or Keras here: staging only reads files (docs/weights.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruits.settings import jobs_module, rules

PREFIX = "models/"
SHA256_META = "sha256"  # user metadata of a staged object: its content's hash


def weights_key(model: str) -> str:
    """The key of ``model``'s staged no-top ImageNet file: ``models/<model>/<file>``."""
    return f"{PREFIX}{model}/{rules.MODELS[model].imagenet_file}"


def weights_uri(bucket: str, model: str) -> str:
    """The ``s3://`` URI a cloud run passes as ``--weights`` for ``weights=imagenet``."""
    return f"s3://{bucket}/{weights_key(model)}"


def keras_cache_dir() -> Path:
    """Keras' cache folder, as the jobs find it (``KERAS_HOME`` or ``~/.keras``, then
    ``models``): their module imports TensorFlow only inside its functions."""
    return jobs_module("fruits_spark.inference.models").keras_cache_dir()


def cached_file(model: str, cache: Path | None = None) -> Path:
    """``model``'s cached no-top file; the jobs' WeightsUnavailable when it is missing
    (for Keras' own folder, their message, which says how to get the file)."""
    models = jobs_module("fruits_spark.inference.models")
    if cache is None:
        return models.imagenet_weights_path(model)
    path = cache / rules.MODELS[model].imagenet_file
    if not path.is_file():
        raise models.WeightsUnavailable(f"ImageNet weights for {model} are not cached at {path}")
    return path


def cached_models(cache: Path | None = None) -> list[str]:
    """The models whose no-top ImageNet file is in Keras' cache, in the registry's order."""
    folder = cache or keras_cache_dir()
    return [name for name, spec in rules.MODELS.items() if (folder / spec.imagenet_file).is_file()]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Staged:
    model: str
    uri: str
    size: int
    uploaded: bool  # False: the bucket already held these bytes


def _remote_sha256(client: Any, bucket: str, key: str) -> str | None:
    """The hash recorded on the staged object, or None when there is no such object."""
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return head.get("Metadata", {}).get(SHA256_META)


def stage(
    client: Any, bucket: str, models: Iterable[str], cache: Path | None = None
) -> list[Staged]:
    """Upload each model's cached no-top file to :func:`weights_key`, unless the object
    there already has the same content (its recorded sha256). ``client``: boto3's S3."""
    done = []
    for model in models:
        path = cached_file(model, cache)
        key, digest = weights_key(model), sha256_of(path)
        upload = _remote_sha256(client, bucket, key) != digest
        if upload:
            client.upload_file(
                str(path), bucket, key, ExtraArgs={"Metadata": {SHA256_META: digest}}
            )
        done.append(Staged(model, f"s3://{bucket}/{key}", path.stat().st_size, upload))
    return done
