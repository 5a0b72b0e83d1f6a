"""How an ``ec2`` node reports: time-stamped lines on stdout (the user data appends them
to the node's log) and JSON objects under the cluster's log prefix in S3, which the
Airflow tasks read. Standard library and boto3 only: it runs on the node."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any


def say(message: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    print(f"{stamp} node: {message}", flush=True)


class LogPrefix:
    """``s3://bucket/prefix/``: where the node reports (objects written whole, JSON).

    S3 goes through ``boto3.client("s3")``: region and endpoint from the environment or
    ``~/.aws/config`` (``AWS_ENDPOINT_URL`` points it at a local S3 in tests)."""

    def __init__(self, uri: str):
        m = re.fullmatch(r"s3://([^/]+)/(.*/)?", uri)
        if not m:
            raise SystemExit(f"node: not an s3://bucket/prefix/ (ending with /): {uri!r}")
        self.uri = uri
        self.bucket, self.prefix = m.group(1), m.group(2) or ""
        self._client = None

    @property
    def s3(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3", config=Config(retries={"mode": "standard", "max_attempts": 8})
            )
        return self._client

    def put(self, name: str, body: bytes, content_type: str = "text/plain") -> None:
        self.s3.put_object(
            Bucket=self.bucket, Key=self.prefix + name, Body=body, ContentType=content_type
        )

    def put_json(self, name: str, value: Any) -> None:
        self.put(name, json.dumps(value, indent=1).encode(), "application/json")

    def get_json(self, name: str) -> Any:
        body = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"]
        return json.loads(body.read())
