"""Converted models in the bucket: ``s3://<bucket>/models/<key>.tflite``, then ``<key>.json``.

The cloud nodes have no TensorFlow: they run a model converted once, off the nodes, by
``make stage-weights`` (:mod:`fruits.dev.stage_weights`), and ``validate_params`` checks
the file a run needs is there before any cluster exists. Both name it here, without
TensorFlow: the key (:func:`fruits_spark.rules.converted_key`, which the jobs' driver
cache uses too) hashes the model, the image size, the weights' sha256, the precision and
the converter's versions, taken from constraints.txt's pins (what ``make venv`` installs
where the conversion runs; the staging command refuses another install).

The weights' sha256 comes without reading the weights: the ``sha256`` metadata
``make stage-weights`` records on what it stages (ImageNet files), or, for a ``.h5`` the
user keeps elsewhere, a sidecar ``models/sources/<hash of its URI>.json`` written when it
was converted, valid while the object's ETag is the one recorded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruits.settings import rules
from fruits.storage.s3sync import split_uri
from fruits.storage.weights import SHA256_META, sha256_of
from fruits.storage.wheels import pin_of

PREFIX = "models/"
SOURCES = f"{PREFIX}sources/"  # what an s3:// weights file hashed to when converted


def converter_version(constraints: Path) -> str:
    """``keras==X tensorflow-cpu==Y`` from constraints.txt (sorted, names as
    :data:`fruits_spark.rules.CONVERTER_DISTS` spells them, as the jobs' driver spells the
    installed ones)."""
    pins = (
        f"{name}=={pin_of(name, constraints).split('==', 1)[1]}" for name in rules.CONVERTER_DISTS
    )
    return " ".join(sorted(pins))


def model_key(
    model: str, image_size: int, weights_sha256: str, converter: str, precision: str = "fp32"
) -> str:
    return rules.converted_key(model, image_size, weights_sha256, converter, precision)


def file_key(key: str) -> str:
    """The object of the converted model."""
    return f"{PREFIX}{key}.tflite"


def manifest_key(key: str) -> str:
    """Its manifest, written after it: the file is complete when this exists."""
    return f"{PREFIX}{key}.json"


def model_uri(bucket: str, key: str) -> str:
    """What ``featurize --model-file`` gets."""
    return f"s3://{bucket}/{file_key(key)}"


def source_key(weights_uri: str) -> str:
    """The sidecar of an ``s3://`` weights file: what it hashed to when converted."""
    return f"{SOURCES}{hashlib.sha256(weights_uri.encode()).hexdigest()[:32]}.json"


def _missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def _head(client: Any, bucket: str, key: str) -> dict | None:
    """HeadObject's answer, or None when there is no such object."""
    from botocore.exceptions import ClientError

    try:
        return client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _missing(exc):
            return None
        raise


def weights_sha256(client: Any, bucket: str, weights: str) -> str | None:
    """The sha256 of the weights the nodes will read, or None when it cannot be known
    without reading them (never converted from there). ``weights``: ``random``, an
    ``s3://`` URI (the staged ImageNet copy included) or a path on this machine."""
    if weights == "random":
        return rules.RANDOM_WEIGHTS_ID
    if not weights.startswith("s3://"):
        return sha256_of(Path(weights.removeprefix("file://")))
    where, key = split_uri(weights)
    head = _head(client, where, key)
    if head is None:
        return None
    if recorded := head.get("Metadata", {}).get(SHA256_META):
        return recorded
    sidecar = _head(client, bucket, source_key(weights))
    if sidecar is None:
        return None
    source = json.loads(client.get_object(Bucket=bucket, Key=source_key(weights))["Body"].read())
    return source.get("sha256") if source.get("etag") == head.get("ETag") else None


@dataclass(frozen=True)
class Lookup:
    """Where a run's converted model is, or would be, and whether it is there."""

    uri: str | None  # s3://<bucket>/models/<key>.tflite; None: the weights' hash is unknown
    found: bool


def find(
    client: Any,
    bucket: str,
    *,
    model: str,
    image_size: int,
    weights: str,
    constraints: Path,
    precision: str = "fp32",
) -> Lookup:
    """The converted model for ``model`` at ``image_size`` and ``precision`` with
    ``weights`` (as the nodes read them): found when its manifest is in the bucket.
    ``client``: boto3's S3."""
    digest = weights_sha256(client, bucket, weights)
    if digest is None:
        return Lookup(None, False)
    key = model_key(model, image_size, digest, converter_version(constraints), precision)
    return Lookup(model_uri(bucket, key), _head(client, bucket, manifest_key(key)) is not None)


def stage_command(
    bucket: str, model: str, image_size: int, weights: str, precision: str = "fp32"
) -> str:
    """The command that makes the converted model, run where TensorFlow is (``make venv``)."""
    line = f"make stage-weights FRUITS_BUCKET={bucket} MODELS={model} SIZES={image_size}"
    line = line if weights == "imagenet" else f"{line} WEIGHTS={weights}"
    return line if precision == "fp32" else f"{line} PRECISIONS={precision}"


# -- the operator's side (make stage-weights; infra/code_grants.py: OPERATOR_ONLY) -------


def upload(client: Any, bucket: str, key: str, content: bytes, manifest: dict) -> bool:
    """Put the model then its manifest (the file is complete once the manifest exists),
    unless the bucket's manifest already names these bytes; True when uploaded."""
    digest = hashlib.sha256(content).hexdigest()
    head = _head(client, bucket, manifest_key(key))
    if head is not None:
        body = client.get_object(Bucket=bucket, Key=manifest_key(key))["Body"].read()
        if json.loads(body).get("sha256") == digest:
            return False
    client.put_object(Bucket=bucket, Key=file_key(key), Body=content)
    body = json.dumps({**manifest, "sha256": digest}, indent=2).encode()
    client.put_object(Bucket=bucket, Key=manifest_key(key), Body=body)
    return True


def record_source(client: Any, bucket: str, weights_uri: str, etag: str, sha256: str) -> None:
    """Remember what the ``s3://`` weights file hashed to, with the ETag it had when read
    (a changed file is a new conversion), so ``validate_params`` finds its model without
    reading it."""
    body = json.dumps({"uri": weights_uri, "etag": etag, "sha256": sha256}).encode()
    client.put_object(Bucket=bucket, Key=source_key(weights_uri), Body=body)
