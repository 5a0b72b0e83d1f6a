"""A folder batch packed into Parquet shards: every image once, in few objects, only
changed shards sent again, memory bounded by a shard, not the batch."""

from __future__ import annotations

import hashlib
import io

import pyarrow.parquet as pq
import pytest
from dag_support import BUCKET

from fruits.storage import packing

PREFIX = "raw/batch=2026-11-24/"
FILES = {
    "Kiwi/a.jpg": b"a" * 3000,
    "Kiwi/b.JPG": b"b" * 3000,
    "Pêche/c d.jpeg": b"c" * 3000,
    "Lime/empty.jpg": b"",  # packed: featurize rejects it as an empty file
    "Lime/notes.txt": b"not an image",  # counted, never sent
    ".hidden/d.jpg": b"d",  # hidden: Spark would never read it
    "Kiwi/._a.jpg": b"resource fork",
}
IMAGES = ["Kiwi/a.jpg", "Kiwi/b.JPG", "Lime/empty.jpg", "Pêche/c d.jpeg"]


@pytest.fixture
def batch(tmp_path):
    for name, data in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    return tmp_path


def shard_rows(aws, prefix: str = PREFIX) -> list[dict]:
    rows = []
    for key in aws.keys(prefix):
        assert key.startswith(prefix + "_packed/") and key.endswith(".parquet"), key
        rows += pq.read_table(io.BytesIO(aws.read(key))).to_pylist()
    return rows


def test_shards_are_planned_in_name_order_within_a_size(batch):
    sizes = {"b/2.jpg": 60, "a/1.jpg": 50, "c/3.jpg": 200, "a/0.jpg": 10}
    shards = packing.plan_shards(sizes, limit=100)
    assert shards == [["a/0.jpg", "a/1.jpg"], ["b/2.jpg"], ["c/3.jpg"]]
    assert packing.plan_shards(sizes, limit=10_000) == [sorted(sizes)]
    assert packing.plan_shards({}, limit=100) == []


def test_a_folder_is_packed_once_each_image_with_its_bytes_and_md5(hook, aws, batch):
    result = packing.pack_folder(hook, batch, BUCKET, PREFIX)
    rows = shard_rows(aws)
    assert sorted(r["name"] for r in rows) == IMAGES
    for r in rows:
        assert r["content"] == FILES[r["name"]] and r["size"] == len(FILES[r["name"]])
        assert r["md5"] == hashlib.md5(FILES[r["name"]]).hexdigest()
    assert (result.uploaded, result.unchanged, result.deleted) == (4, 0, 0)
    assert result.not_images == 3 and result.shards == 1 == result.shards_sent


def test_only_changed_shards_are_sent_again_and_stale_objects_go(hook, aws, batch, monkeypatch):
    aws.s3.put_object(Bucket=BUCKET, Key=PREFIX + "Kiwi/old.jpg", Body=b"an unpacked upload")
    monkeypatch.setattr(packing, "SHARD_BYTES", 3000)  # one image a shard
    first = packing.pack_folder(hook, batch, BUCKET, PREFIX)
    assert (first.shards, first.shards_sent, first.deleted) == (3, 3, 1)  # empty joins a shard
    keys = set(aws.keys(PREFIX))
    assert PREFIX + "Kiwi/old.jpg" not in keys

    again = packing.pack_folder(hook, batch, BUCKET, PREFIX)
    assert (again.uploaded, again.unchanged, again.shards_sent, again.deleted) == (0, 4, 0, 0)
    assert set(aws.keys(PREFIX)) == keys

    (batch / "Kiwi/a.jpg").write_bytes(b"A" * 3000)  # same size, new bytes: a new MD5
    third = packing.pack_folder(hook, batch, BUCKET, PREFIX)
    assert third.shards_sent == 1 and third.deleted == 1 and third.unchanged == 3
    rows = {r["name"]: r["content"] for r in shard_rows(aws)}
    assert rows["Kiwi/a.jpg"] == b"A" * 3000 and len(rows) == 4


def test_row_groups_stay_small_so_spark_can_split_a_shard(monkeypatch, batch, tmp_path):
    monkeypatch.setattr(packing, "ROW_GROUP_BYTES", 3000)
    [shard] = packing.pack_to_folder(batch, tmp_path / "out")
    meta = pq.ParquetFile(shard).metadata
    assert meta.num_rows == 4 and meta.num_row_groups == 3  # a.jpg | b.JPG + empty | c d.jpeg
