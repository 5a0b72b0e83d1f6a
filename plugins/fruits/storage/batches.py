"""Where a run's batch comes from: a folder on the Airflow worker (the demo's) or an
``s3://bucket/prefix`` (MWAA, Celery, Kubernetes: no shared disk), both laid out
``<source>/<YYYY-MM-DD>/<label>/<file>``, counted by the jobs' own rules, and mirrored
into ``raw/batch=<date>/``. An S3 batch is copied server-side: the images never pass
through the worker, and ``find_batch`` and ``upload_batch`` may run on different ones.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fruits.settings import rules
from fruits.storage.folder_files import iter_files
from fruits.storage.packing import pack_folder
from fruits.storage.s3sync import SyncResult, list_objects, mirror_copy, split_uri, upload_folder

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_s3(source: str) -> bool:
    return source.startswith("s3://")


def batch_uri(source: str, batch: str) -> str:
    """The batch's folder or ``s3://`` prefix (with its trailing slash)."""
    if is_s3(source):
        return f"{source.rstrip('/')}/{batch}/"
    return str(Path(source) / batch)


def is_image(relative: str) -> bool:
    """An image the jobs read: its extension, and no hidden part in its path."""
    return rules.is_image_path(relative)


def count_images(folder: Path) -> int:
    """Image files in a batch folder, by the jobs' own rules (extension; hidden skipped)."""
    if not folder.is_dir():
        return 0
    return sum(is_image(rel) for rel, _ in iter_files(folder))


def count_s3_images(keys: Iterable[str], prefix: str) -> int:
    return sum(is_image(key[len(prefix) :]) for key in keys if key.startswith(prefix))


def count_batch(source: str, batch: str, source_hook: Any) -> int:
    """How many images the batch holds; 0 when it is missing or empty."""
    if not is_s3(source):
        return count_images(Path(batch_uri(source, batch)))
    bucket, prefix = split_uri(batch_uri(source, batch))
    return count_s3_images(list_objects(source_hook, bucket, prefix), prefix)


def _latest(names: Iterable[str]) -> str | None:
    dates = []
    for name in names:
        if DATE_RE.match(name):
            try:
                dates.append(dt.date.fromisoformat(name))
            except ValueError:
                continue
    return max(dates).isoformat() if dates else None


def latest_batch(source: str, source_hook: Any = None) -> str | None:
    """The newest ``YYYY-MM-DD`` batch under the source, if any."""
    if not is_s3(source):
        folder = Path(source)
        if not folder.is_dir():
            return None
        return _latest(child.name for child in folder.iterdir() if child.is_dir())
    bucket, prefix = split_uri(source.rstrip("/") + "/")
    found = source_hook.list_prefixes(bucket_name=bucket, prefix=prefix, delimiter="/") or []
    return _latest(p[len(prefix) :].strip("/") for p in found)


def mirror_batch(
    source: str,
    batch: str,
    hook: Any,
    source_hook: Any,
    bucket: str,
    prefix: str,
    *,
    pack: bool = True,
) -> SyncResult:
    """Make ``s3://bucket/prefix`` hold exactly the batch: a folder's images packed into
    Parquet shards (:mod:`fruits.storage.packing`; with ``pack=False`` uploaded file by
    file), or an S3 batch copied server-side object by object (listed by
    ``source_hook``, copied by ``hook``: a copy reads with the copying principal).
    Unchanged objects are skipped, vanished ones deleted."""
    where = batch_uri(source, batch)
    if not is_s3(source):
        if pack:
            return pack_folder(hook, Path(where), bucket, prefix)
        return upload_folder(hook, Path(where), bucket, prefix)
    src_bucket, src_prefix = split_uri(where)
    return mirror_copy(source_hook, hook, src_bucket, src_prefix, bucket, prefix)
