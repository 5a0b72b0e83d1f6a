"""``make stage-weights``: ImageNet weights from this machine's Keras cache to the bucket.

The ``emr`` and ``ec2`` backends read ``weights=imagenet`` from
``s3://<bucket>/models/<model>/<file>`` (:mod:`fruits.storage.weights`), never from the
Airflow worker. Run this once per bucket, and again after ``make weights`` or a new
Keras file; unchanged objects are skipped. It uses the AWS credentials of your shell
(boto3's usual chain), not Airflow's connection, and never imports TensorFlow.

    python -m fruits.dev.stage_weights [--bucket B] [--models mobilenet vgg16]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fruits.settings import Settings, model_names
from fruits.storage.s3sync import error_code
from fruits.storage.weights import cached_models, keras_cache_dir, stage


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
        help="default: every model whose file is in Keras' cache",
    )
    parser.add_argument("--endpoint-url", help="an S3 endpoint other than AWS' (tests, MinIO)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import boto3
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    args = parse_args(argv)
    cache = keras_cache_dir()
    models = args.models or cached_models(cache)
    if not models:
        print(
            f"no ImageNet weights in Keras' cache ({cache}): run `make weights` (mobilenet, "
            "offline) or load the model once with Keras where there is internet",
            file=sys.stderr,
        )
        return 1
    client = boto3.client("s3", endpoint_url=args.endpoint_url)
    try:
        staged = stage(client, args.bucket, models)
    except (Boto3Error, BotoCoreError, ClientError, RuntimeError) as exc:  # WeightsUnavailable too
        why = (
            f"no bucket {args.bucket}: pass --bucket (or FRUITS_BUCKET), or deploy the stack "
            "first (docs/deploy-aws.md)"
            if error_code(exc) == "NoSuchBucket"
            else str(exc)
        )
        print(f"cannot stage weights to s3://{args.bucket}/: {why}", file=sys.stderr)
        return 1
    for item in staged:
        what = "uploaded " if item.uploaded else "unchanged"
        print(f"{what} {item.uri} ({item.size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
