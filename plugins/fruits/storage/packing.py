"""A batch folder packed into a few Parquet shards of image bytes, then sent to S3.

Why: a Fruits-360 batch is ~90,000 files of ~4 KB. One PUT per file took longer than
the CNN (230 images/s to moto; on AWS, 90k requests cost more than the compute), and
Spark reading 90k small objects pays S3's per-object latency 90k times. Shards of
:data:`SHARD_BYTES` turn that into a few dozen requests each way.

- Layout: ``<prefix>_packed/<digest>.parquet`` (``fruits_spark.rules.PACKED_FOLDER``),
  one row per image: ``name`` (``<label>/<file>``, as in the folder), ``content``,
  ``size``, ``md5``. Only images by the jobs' rules are packed (hidden files and other
  extensions are counted, not sent); a zero-byte image is packed, and featurize rejects it.
- Incremental: files are grouped in name order; a shard's key is the digest of its
  members' names, sizes and MD5s (the per-object size-and-ETag rule of a plain mirror),
  so an unchanged shard keeps its key and is not sent again; shards the batch no longer
  makes, and anything else under the prefix (an earlier unpacked upload), are deleted
  after the new ones are in.
- Bounded memory: one shard (<= :data:`SHARD_BYTES`, plus one larger file) per thread.
- Row groups of <= :data:`ROW_GROUP_BYTES`, so Spark splits a shard over many tasks.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruits.settings import rules
from fruits.storage.folder_files import iter_files
from fruits.storage.s3sync import UPLOAD_THREADS, SyncResult, list_objects

log = logging.getLogger(__name__)

# Each of the 4 threads holds its shard's files and a row group's table, and uploads the
# Parquet from a temporary file: 8 MB keeps that well under 200 MB whatever the batch
# (32 MB shards held in memory took ~500 MB at 90k images), and 90k images are still ~45
# objects.
SHARD_BYTES = 8 * 1024**2
ROW_GROUP_BYTES = 1024**2  # Spark splits a shard here (fruits_spark.io.packed)
FORMAT_VERSION = "1"  # part of every shard's digest: a new format re-sends everything


@dataclass(frozen=True)
class PackResult(SyncResult):
    """A :class:`SyncResult` counted in images, plus the objects it took."""

    shards: int = 0  # shards the batch is now made of
    shards_sent: int = 0
    bytes_sent: int = 0
    not_images: int = 0  # files in the folder that are no images by the jobs' rules

    def as_dict(self) -> dict[str, int]:
        return {
            **super().as_dict(),
            "shards": self.shards,
            "shards_sent": self.shards_sent,
            "bytes_sent": self.bytes_sent,
            "not_images": self.not_images,
        }


def plan_shards(files: dict[str, int], limit: int) -> list[list[str]]:
    """Relative name -> size, grouped in name order into shards of at most ``limit``
    bytes (a larger file gets a shard of its own). The same files give the same shards."""
    shards: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name in sorted(files):
        if current and size + files[name] > limit:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += files[name]
    if current:
        shards.append(current)
    return shards


@dataclass(frozen=True)
class Member:
    name: str
    content: bytes
    md5: str


def read_members(folder: Path, names: list[str]) -> list[Member]:
    members = []
    for name in names:
        content = (folder / name).read_bytes()
        md5 = hashlib.md5(content, usedforsecurity=False).hexdigest()
        members.append(Member(name, content, md5))
    return members


def shard_digest(members: list[Member]) -> str:
    """What a shard holds, by name, size and MD5 of each image: its key in the bucket."""
    h = hashlib.sha256(f"fruits-packed-v{FORMAT_VERSION}\n".encode())
    for m in members:
        h.update(f"{m.name}\0{len(m.content)}\0{m.md5}\n".encode())
    return h.hexdigest()[:32]


def _row_groups(members: list[Member]) -> Iterator[list[Member]]:
    group: list[Member] = []
    size = 0
    for m in members:
        if group and size + len(m.content) > ROW_GROUP_BYTES:
            yield group
            group, size = [], 0
        group.append(m)
        size += len(m.content)
    if group:
        yield group


def write_shard(members: list[Member], sink: Path) -> None:
    """The shard as a Parquet file (images are compressed already: no codec)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            pa.field("name", pa.string()),
            pa.field("content", pa.binary()),
            pa.field("size", pa.int64()),
            pa.field("md5", pa.string()),
        ]
    )
    assert tuple(schema.names) == rules.PACKED_COLUMNS
    with pq.ParquetWriter(sink, schema, compression="none") as writer:
        for group in _row_groups(members):
            writer.write_table(
                pa.table(
                    {
                        "name": [m.name for m in group],
                        "content": [m.content for m in group],
                        "size": [len(m.content) for m in group],
                        "md5": [m.md5 for m in group],
                    },
                    schema=schema,
                )
            )


def packed_prefix(prefix: str) -> str:
    prefix = prefix if prefix.endswith("/") or not prefix else prefix + "/"
    return f"{prefix}{rules.PACKED_FOLDER}/"


def scan(folder: Path) -> tuple[dict[str, int], int]:
    """The folder's images (relative name -> size), and how many other files it holds."""
    sizes: dict[str, int] = {}
    not_images = 0
    for rel, size in iter_files(folder):
        if rules.is_image_path(rel):
            sizes[rel] = size
        else:
            not_images += 1
    return sizes, not_images


def pack_to_folder(folder: Path, dest: Path, limit: int | None = None) -> list[Path]:
    """The folder's shards written under ``dest/_packed/`` (what a packed batch looks
    like when staged: the local backend's copy, the tests' and the bench's batches)."""
    sizes, _ = scan(folder)
    out = dest / rules.PACKED_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for names in plan_shards(sizes, limit or SHARD_BYTES):
        members = read_members(folder, names)
        path = out / f"{shard_digest(members)}.parquet"
        write_shard(members, path)
        written.append(path)
    return written


def pack_folder(hook: Any, folder: Path, bucket: str, prefix: str) -> PackResult:
    """Make ``s3://bucket/prefix`` hold exactly the folder's images, packed (module doc)."""
    sizes, not_images = scan(folder)
    shards_prefix = packed_prefix(prefix)
    remote = list_objects(hook, bucket, prefix)

    def send(names: list[str]) -> tuple[str, int, int]:
        """The shard's key, and the images and bytes sent (0, 0: it was there)."""
        members = read_members(folder, names)
        key = f"{shards_prefix}{shard_digest(members)}.parquet"
        if key in remote:
            return key, 0, 0
        # Through a temporary file, not bytes: the Parquet buffer, its copy and the
        # upload's own copy held ~3 more shards per thread in memory (docs/performance.md)
        with tempfile.TemporaryDirectory(prefix="fruits-shard-") as tmp:
            path = Path(tmp) / "shard.parquet"
            write_shard(members, path)
            count = len(members)
            del members
            # the provider's upload: the connection's extra args (SSE) and transfer config
            hook.load_file(str(path), key=key, bucket_name=bucket, replace=True)
            return key, count, path.stat().st_size

    plan = plan_shards(sizes, SHARD_BYTES)
    with ThreadPoolExecutor(max_workers=min(UPLOAD_THREADS, 4)) as pool:
        sent = list(pool.map(send, plan))
    wanted = {key for key, _, _ in sent}
    stale = sorted(k for k in remote if k not in wanted)
    if stale:
        hook.delete_objects(bucket=bucket, keys=stale)
    uploaded = sum(n for _, n, _ in sent)
    result = PackResult(
        uploaded=uploaded,
        unchanged=len(sizes) - uploaded,
        deleted=len(stale),
        shards=len(plan),
        shards_sent=sum(1 for _, n, _ in sent if n),
        bytes_sent=sum(b for _, _, b in sent),
        not_images=not_images,
    )
    log.info("s3://%s/%s (packed): %s", bucket, shards_prefix, result.as_dict())
    return result
