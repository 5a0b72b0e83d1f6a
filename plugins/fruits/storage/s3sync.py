"""Many files between a folder and S3 in one task, through the Amazon provider's S3Hook;
and the S3 rules the other modules share: an s3:// URI's parts (:func:`split_uri`), the
markers a reader waits for (:data:`MARKERS`).

Only new or changed files are sent: a local file is unchanged when S3 holds an object
of the same size whose ETag equals the file's MD5 (or, for multipart uploads, the
MD5 of the part MD5s with ``-<parts>``, computed with the hook's transfer settings).
SSE-KMS objects have ETags that are not MD5s; for them an object at least as new as
the file counts as unchanged, as ``aws s3 sync`` decides.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Written last when publishing a folder, deleted first: a reader that waits for them
# never sees a half-published output.
MARKERS = ("_SUCCESS", "report.json")
S3_SCHEMES = ("s3://", "s3a://", "s3n://")
UPLOAD_THREADS = 8
COPY_LIMIT = 5 * 1024**3  # CopyObject's limit; larger objects need a multipart copy
# S3 error codes a retry cannot fix (rights, bucket, credentials): fail the task at once
PERMANENT_ERRORS = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "NoSuchBucket",
        "SignatureDoesNotMatch",
    }
)


@dataclass(frozen=True)
class SyncResult:
    uploaded: int
    unchanged: int
    deleted: int

    @property
    def total(self) -> int:
        return self.uploaded + self.unchanged

    def as_dict(self) -> dict[str, int]:
        return {
            "uploaded": self.uploaded,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "total": self.total,
        }


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ``ClientError``, also when wrapped (boto3's
    ``S3UploadFailedError`` only chains it); None for anything else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "response", {}).get("Error", {}).get("Code")
        if code:
            return str(code)
        current = current.__cause__ or current.__context__
    return None


def is_permanent(exc: BaseException) -> bool:
    return error_code(exc) in PERMANENT_ERRORS


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``("bucket", "key")``. Hadoop's ``s3a://`` and ``s3n://``
    name the same objects (an EMR LogUri, the ec2 nodes' steps); ValueError for others."""
    scheme = next((s for s in S3_SCHEMES if uri.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len(scheme) :].partition("/")
    return bucket, key


def is_marker(key: str) -> bool:
    """The object is one of :data:`MARKERS`, which readers wait for."""
    return key.rsplit("/", 1)[-1] in MARKERS


def read_json(hook: Any, uri: str) -> Any:
    """The JSON document at ``uri``, or None if there is no such object."""
    bucket, key = split_uri(uri)
    if not hook.check_for_key(key, bucket_name=bucket):
        return None
    return json.loads(hook.read_key(key, bucket_name=bucket))


def local_etag(path: Path, threshold: int, chunk: int) -> str:
    """The ETag S3 gives ``path`` when uploaded with these multipart settings (no KMS)."""
    from s3transfer.utils import ChunksizeAdjuster

    size = path.stat().st_size
    with path.open("rb") as f:
        if size < threshold:
            return hashlib.md5(f.read(), usedforsecurity=False).hexdigest()
        chunk = ChunksizeAdjuster().adjust_chunksize(chunk, size)  # >= 5 MiB, <= 10000 parts
        parts = []
        while block := f.read(chunk):
            parts.append(hashlib.md5(block, usedforsecurity=False).digest())
    combined = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(parts)}"


def list_objects(hook: Any, bucket: str, prefix: str) -> dict[str, dict]:
    """Key -> metadata (Size, ETag) of every object under the prefix."""
    return {obj["Key"]: obj for obj in hook.iter_file_metadata(prefix=prefix, bucket_name=bucket)}


def local_files(folder: Path, skip_hidden: bool = False) -> dict[str, Path]:
    """Relative POSIX path -> file, for every file under the folder."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        if skip_hidden and any(part.startswith(".") for part in rel.split("/")):
            continue
        files[rel] = path
    return files


def _unchanged(path: Path, remote: dict | None, threshold: int, chunk: int) -> bool:
    """Same size, and the ETag is the file's MD5; or, where the ETag is no MD5 (SSE-KMS
    buckets), the object is newer than the file (``aws s3 sync``'s rule)."""
    if remote is None or int(remote.get("Size", -1)) != path.stat().st_size:
        return False
    if remote.get("ETag", "").strip('"') == local_etag(path, threshold, chunk):
        return True
    modified = remote.get("LastModified")
    return modified is not None and modified.timestamp() >= path.stat().st_mtime


def _upload(hook: Any, bucket: str, items: Iterable[tuple[Path, str]]) -> int:
    """Files under the multipart threshold go :data:`UPLOAD_THREADS` at a time; larger
    ones one at a time, each already sent in parallel parts by the provider's managed
    upload. Eight multipart uploads at once could hold 8 x 10 parts of 8 MB (a 90k
    batch's features parts are ~45 MB); this way the uploads hold eight small files or
    one upload's parts, whatever the batch's size."""
    items = list(items)
    if not items:
        return 0
    threshold = getattr(getattr(hook, "transfer_config", None), "multipart_threshold", 8 * 2**20)
    small: list[tuple[Path, str]] = []
    large: list[tuple[Path, str]] = []
    for path, key in items:
        (small if Path(path).stat().st_size < threshold else large).append((path, key))

    def send(path: Path, key: str) -> None:
        hook.load_file(filename=path, key=key, bucket_name=bucket, replace=True)

    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        for future in [pool.submit(send, path, key) for path, key in small]:
            future.result()  # re-raise the first upload error
    for path, key in large:
        send(path, key)
    return len(items)


def sync_up(
    hook: Any,
    files: dict[str, Path],
    bucket: str,
    prefix: str,
    *,
    delete_stale: bool = True,
    markers_last: bool = False,
) -> SyncResult:
    """Make ``s3://bucket/prefix`` hold exactly ``files`` (relative name -> local path).

    Sends only new or changed files. With ``markers_last``, markers (``_SUCCESS``,
    ``report.json``) are deleted first and written after everything else, and stale
    objects are deleted before the markers return.
    """
    prefix = prefix if prefix.endswith("/") or not prefix else prefix + "/"
    cfg = hook.transfer_config
    threshold, chunk = cfg.multipart_threshold, cfg.multipart_chunksize
    remote = list_objects(hook, bucket, prefix)
    wanted = {prefix + rel: path for rel, path in files.items()}

    def last(key: str) -> bool:
        return markers_last and is_marker(key)

    changed = {
        key: path
        for key, path in wanted.items()
        if not _unchanged(path, remote.get(key), threshold, chunk)
    }
    stale = sorted(k for k in remote if k not in wanted) if delete_stale else []
    if markers_last and any(not last(k) for k in [*changed, *stale]):
        # The data changes: take the markers down first, put them back last.
        present = [k for k in remote if last(k)]
        if present:
            hook.delete_objects(bucket=bucket, keys=present)
        changed.update({k: p for k, p in wanted.items() if last(k)})
    uploaded = _upload(hook, bucket, ((p, k) for k, p in changed.items() if not last(k)))
    if stale:
        hook.delete_objects(bucket=bucket, keys=stale)
    uploaded += _upload(hook, bucket, ((p, k) for k, p in changed.items() if last(k)))
    result = SyncResult(uploaded, len(wanted) - len(changed), len(stale))
    log.info("s3://%s/%s: %s", bucket, prefix, result.as_dict())
    return result


def upload_folder(hook: Any, folder: Path, bucket: str, prefix: str) -> SyncResult:
    """Mirror a batch folder to S3 (new or changed files sent, vanished ones deleted)."""
    return sync_up(hook, local_files(folder), bucket, prefix, delete_stale=True)


def publish_folder(hook: Any, folder: Path, uri: str) -> SyncResult:
    """Publish a job's output folder (Parquet, report) to ``uri``, replacing what was there.

    Hadoop's local checksum files (``.*.crc``) stay behind; markers go last.
    """
    bucket, prefix = split_uri(uri)
    files = local_files(folder, skip_hidden=True) if folder.is_dir() else {}
    return sync_up(hook, files, bucket, prefix, delete_stale=True, markers_last=True)


def copy_objects(
    hook: Any,
    bucket: str,
    copies: dict[str, str],
    sizes: dict[str, int],
    source_bucket: str | None = None,
) -> int:
    """Server-side copies into ``bucket`` (destination key -> source key, in
    ``source_bucket``, by default the same bucket), in parallel; nothing passes through
    the worker. ``sizes``: source key -> bytes."""
    from airflow.providers.amazon.aws.hooks.s3 import NO_ACL

    source_bucket = source_bucket or bucket

    def copy(dest: str, src: str) -> None:
        if sizes.get(src, 0) <= COPY_LIMIT:
            # no ACL header: the bucket enforces owner-only objects (ACLs disabled)
            hook.copy_object(src, dest, source_bucket, bucket, acl_policy=NO_ACL)
        else:  # CopyObject stops at 5 GiB: boto3's managed (multipart) copy
            source = {"Bucket": source_bucket, "Key": src}
            hook.get_conn().copy(source, bucket, dest, Config=hook.transfer_config)

    if not copies:
        return 0
    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        for future in [pool.submit(copy, d, s) for d, s in copies.items()]:
            future.result()  # re-raise the first error
    return len(copies)


def _same_object(source: dict, dest: dict | None) -> bool:
    """Same size and ETag: a single-part server-side copy keeps the source's ETag."""
    return (
        dest is not None
        and int(dest.get("Size", -1)) == int(source.get("Size", -2))
        and dest.get("ETag", "").strip('"') == source.get("ETag", "").strip('"')
    )


def mirror_copy(
    source_hook: Any, hook: Any, src_bucket: str, src_prefix: str, bucket: str, prefix: str
) -> SyncResult:
    """Make ``s3://bucket/prefix`` hold exactly the objects under ``s3://src_bucket/src_prefix``
    by server-side copies (``hook``'s principal reads the source), skipping objects of the
    same size and ETag and deleting the ones the source no longer has. ``source_hook``
    lists the source (it may be another account's connection)."""
    src_prefix = src_prefix if src_prefix.endswith("/") else src_prefix + "/"
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    sources = {
        key: meta
        for key, meta in list_objects(source_hook, src_bucket, src_prefix).items()
        if not key.endswith("/")  # "folder" placeholders some consoles create
    }
    remote = list_objects(hook, bucket, prefix)
    wanted = {prefix + key[len(src_prefix) :]: key for key in sources}
    changed = {d: s for d, s in wanted.items() if not _same_object(sources[s], remote.get(d))}
    sizes = {key: int(meta.get("Size", 0)) for key, meta in sources.items()}
    copied = copy_objects(hook, bucket, changed, sizes, source_bucket=src_bucket)
    stale = sorted(k for k in remote if k not in wanted)
    if stale:
        hook.delete_objects(bucket=bucket, keys=stale)
    result = SyncResult(copied, len(wanted) - len(changed), len(stale))
    log.info("s3://%s/%s -> s3://%s/%s: %s", src_bucket, src_prefix, bucket, prefix,
             result.as_dict())  # fmt: skip
    return result


def stage_down(hook: Any, uri: str, dest: Path) -> Path:
    """Copy an s3:// object, or every object under an s3:// prefix, to ``dest``."""
    bucket, key = split_uri(uri)
    if key and not key.endswith("/") and hook.head_object(key=key, bucket_name=bucket):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        hook.download_file(
            key=key,
            bucket_name=bucket,
            local_path=str(dest.parent),
            preserve_file_name=True,
            use_autogenerated_subdir=False,
        )
        downloaded = dest.parent / key.rsplit("/", 1)[-1]
        if downloaded != dest:
            downloaded.replace(dest)
        return dest
    prefix = key if key.endswith("/") or not key else key + "/"
    dest.mkdir(parents=True, exist_ok=True)
    download_prefix(hook, bucket, prefix, dest)
    return dest


def download_prefix(hook: Any, bucket: str, prefix: str, dest: Path) -> int:
    """Every object under the prefix to ``dest`` (its key less the prefix), a file of the
    same size and newer than the object skipped; returns the objects downloaded.

    One listing, then :data:`UPLOAD_THREADS` downloads at a time through one client
    (boto3's clients are thread-safe), each a plain managed download: the provider's
    ``sync_to_local_dir`` takes one object at a time, ~110 images/s from moto here, so a
    90k-image batch took longer to stage than to featurize."""
    client = hook.get_conn()
    config = hook.transfer_config
    todo = []
    for obj in list_objects(hook, bucket, prefix).values():
        target = dest / obj["Key"][len(prefix) :]
        if obj["Key"].endswith("/"):
            continue  # a "folder" placeholder
        if target.is_file() and target.stat().st_size == int(obj["Size"]):
            modified = obj.get("LastModified")
            if modified is None or target.stat().st_mtime >= modified.timestamp():
                continue
        todo.append((obj["Key"], target))

    def get(key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(target), Config=config)

    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        for future in [pool.submit(get, k, t) for k, t in todo]:
            future.result()  # re-raise the first error
    return len(todo)
