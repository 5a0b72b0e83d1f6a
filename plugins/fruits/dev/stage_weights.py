"""``make stage-weights``: ImageNet weights from this machine's Keras cache to the bucket,
and the models the cloud nodes run, converted once.

The ``emr`` and ``ec2`` backends read ``weights=imagenet`` from
``s3://<bucket>/models/<model>/<file>`` (:mod:`fruits.storage.weights`), never from the
Airflow worker, and their nodes have no TensorFlow: they run
``s3://<bucket>/models/<key>.tflite`` (:mod:`fruits.storage.converted_models`), which this
command converts here, where the dev install has TensorFlow, for each model and image
size (defaults: the models staged, at ``FRUITS_IMAGE_SIZE``, else 224). Other weights
(``--weights random``, ``s3://.../x.h5`` or a local ``.h5``) are converted the same way,
without staging anything else. Run it once per bucket, and again after ``make weights``,
a new Keras file or a new TensorFlow pin; unchanged objects are skipped, and a
conversion already in the bucket is not made again. It uses the AWS credentials of your
shell (boto3's usual chain), not Airflow's connection. ``--no-convert`` only stages the
weights, and never imports TensorFlow.

    python -m fruits.dev.stage_weights [--bucket B] [--models mobilenet vgg16]
        [--image-sizes 224 128] [--weights imagenet|random|s3://b/k.h5|/path.h5] [--no-convert]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruits.settings import Settings, constraints_file, jobs_module, model_names, rules
from fruits.storage import converted_models
from fruits.storage.s3sync import error_code, split_uri
from fruits.storage.weights import (
    cached_file,
    cached_models,
    keras_cache_dir,
    stage,
    weights_uri,
)


class StageError(RuntimeError):
    """What stops the command; one line for the user."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fruits.dev.stage_weights", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--bucket",
        default=os.environ.get("FRUITS_BUCKET", "").strip() or Settings.bucket,
        help="the pipeline's bucket (default: FRUITS_BUCKET, else %(default)s)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=model_names(),
        help="default: every model whose file is in Keras' cache (imagenet only)",
    )
    parser.add_argument(
        "--image-sizes",
        nargs="+",
        type=int,
        default=None,
        help="the sizes to convert for (default: FRUITS_IMAGE_SIZE, else the DAG's 224)",
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (stage Keras' cached files, then convert them), random, or the "
        "s3:// URI or path of a .h5 file to convert",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=rules.PRECISIONS,
        default=[rules.DEFAULT_PRECISION],
        help="what to convert for: fp32 (default) and/or int8 (mobilenet only; docs/precision.md)",
    )
    parser.add_argument("--no-convert", action="store_true", help="stage the weights only")
    parser.add_argument("--endpoint-url", help="an S3 endpoint other than AWS' (tests, MinIO)")
    args = parser.parse_args(argv)
    if args.weights != "imagenet" and not args.models:
        parser.error(f"--weights {args.weights} needs --models (which network they fit)")
    if args.weights != "imagenet" and args.no_convert:
        parser.error("--no-convert stages imagenet weights only")
    if args.image_sizes is None:
        env = os.environ.get("FRUITS_IMAGE_SIZE", "").strip()
        args.image_sizes = [int(env) if env else rules.IMAGE_SIZE_DEFAULT]
    for size in args.image_sizes:
        if error := rules.image_size_error(size):
            parser.error(f"--image-sizes {error}")
    for precision in args.precisions:
        for model in args.models or ():
            if error := rules.precision_error(precision, model):
                parser.error(f"--precisions {error}")
    return args


@dataclass(frozen=True)
class Source:
    """The weights a conversion starts from, as the nodes' runs will name them."""

    weights: str  # as the run passes --weights: random, the staged copy's URI, a URI, a path
    data: bytes | None  # None: the seeded random weights
    suffix: str
    etag: str = ""  # of an s3:// file when read: its sidecar records it


def read_source(client: Any, weights: str) -> Source:
    """The weights' bytes, from S3 or this machine."""
    if weights == "random":
        return Source("random", None, ".weights.h5")
    suffix = ".weights.h5" if weights.endswith(".weights.h5") else ".h5"
    if weights.startswith("s3://"):
        bucket, key = split_uri(weights)
        got = client.get_object(Bucket=bucket, Key=key)
        return Source(weights, got["Body"].read(), suffix, got["ETag"])
    path = Path(weights.removeprefix("file://"))
    try:
        return Source(str(path), path.read_bytes(), suffix)
    except OSError as exc:
        raise StageError(f"cannot read --weights {weights}: {exc}") from None


def check_converter(constraints: Path) -> str:
    """The converter's pins; StageError when the installed TensorFlow or Keras is another
    (a conversion would be named for versions that did not make it)."""
    wanted = converted_models.converter_version(constraints)
    installed = jobs_module("fruits_spark.inference.converted").converter_version()
    if installed != wanted:
        raise StageError(
            f"converting needs {wanted} (constraints.txt), this Python has {installed}: run "
            "it from the dev install (`make venv`; requirements/convert.txt)"
        )
    return wanted


def convert_one(
    client: Any,
    bucket: str,
    model: str,
    size: int,
    source: Source,
    converter: str,
    precision: str = "fp32",
):
    """Convert ``model`` at ``size`` and ``precision`` unless the bucket has it; one line
    of what happened."""
    converted = jobs_module("fruits_spark.inference.converted")
    models = jobs_module("fruits_spark.inference.models")
    digest = rules.RANDOM_WEIGHTS_ID if source.data is None else models.sha256(source.data)
    key = converted_models.model_key(model, size, digest, converter, precision)
    uri = converted_models.model_uri(bucket, key)
    if source.etag:
        converted_models.record_source(client, bucket, source.weights, source.etag, digest)
    found = converted_models.find(
        client, bucket, model=model, image_size=size, weights=source.weights,
        constraints=_constraints(), precision=precision,
    )  # fmt: skip
    if found.found and found.uri == uri:
        tag = "" if precision == rules.DEFAULT_PRECISION else f" {precision}"
        return f"unchanged {uri} ({model}@{size}{tag}, weights {source.weights})"
    try:
        content, manifest, how = converted.cached_or_convert(
            model, size, source.weights, source.data, source.suffix, precision=precision
        )
    except ImportError as exc:
        raise StageError(
            f"converting needs TensorFlow and Keras (requirements/convert.txt; `make venv`): {exc}"
        ) from None
    except Exception as exc:  # Keras' loader: the weights do not fit the network
        raise StageError(f"--weights {source.weights} do not fit {model}@{size}: {exc}") from None
    converted_models.upload(client, bucket, key, content, manifest)
    return f"uploaded  {uri} ({len(content) / 1e6:.1f} MB, {how})"


def _constraints() -> Path:
    from fruits.settings import load_settings

    return constraints_file(load_settings().jobs_dir)


def stage_and_convert(client: Any, args: argparse.Namespace) -> Iterator[str]:
    """One line per object staged or converted, as it is done; StageError or boto3's on
    failure (what was done before stays done)."""
    sources: dict[str, Source] = {}
    if args.weights == "imagenet":
        cache = keras_cache_dir()
        models = args.models or cached_models(cache)
        if not models:
            raise StageError(
                f"no ImageNet weights in Keras' cache ({cache}): run `make weights` "
                "(mobilenet, offline) or load the model once with Keras where there is internet"
            )
        for item in stage(client, args.bucket, models):
            what = "uploaded " if item.uploaded else "unchanged"
            yield f"{what} {item.uri} ({item.size / 1e6:.1f} MB)"
            data = cached_file(item.model).read_bytes()  # the bytes just staged
            sources[item.model] = Source(weights_uri(args.bucket, item.model), data, ".h5")
        if args.no_convert:
            return
    else:
        models = args.models
        sources = dict.fromkeys(models, read_source(client, args.weights))
    converter = check_converter(_constraints())
    for model in models:
        for size in args.image_sizes:
            for precision in getattr(args, "precisions", [rules.DEFAULT_PRECISION]):
                if why := rules.precision_error(precision, model):
                    yield f"skipped   {model}@{size} {precision}: {why}"
                    continue
                yield convert_one(
                    client, args.bucket, model, size, sources[model], converter, precision
                )


def main(argv: Sequence[str] | None = None) -> int:
    import boto3
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    args = parse_args(argv)
    client = boto3.client("s3", endpoint_url=args.endpoint_url)
    try:
        for line in stage_and_convert(client, args):
            print(line, flush=True)
    except StageError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (Boto3Error, BotoCoreError, ClientError, RuntimeError) as exc:  # WeightsUnavailable too
        why = (
            f"no bucket {args.bucket}: pass --bucket (or FRUITS_BUCKET), or deploy the stack "
            "first (docs/deploy-aws.md)"
            if error_code(exc) == "NoSuchBucket"
            else str(exc)
        )
        print(f"cannot stage weights to s3://{args.bucket}/: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
