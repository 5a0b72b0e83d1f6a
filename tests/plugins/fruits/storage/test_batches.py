"""Batches in a folder or under an S3 prefix: counted by the jobs' rules, the latest one
found, and mirrored into raw/ (an S3 batch by server-side copies only)."""

from __future__ import annotations

import pytest
from dag_support import BUCKET

from fruits.storage import batches

SOURCE_BUCKET = "landing-zone"
SOURCE = f"s3://{SOURCE_BUCKET}/fruits/landing"
DATE = "2026-11-24"
RAW = f"raw/batch={DATE}/"
FILES = {
    "Kiwi/a.jpg": b"a" * 10,
    "Kiwi/b.png": b"b" * 7,
    "Pêche/c.jpeg": b"c",
    "Kiwi/notes.txt": b"not an image",  # copied (raw/ mirrors the batch), not counted
    ".hidden/d.jpg": b"d",  # hidden: not counted, as in a folder
}


@pytest.fixture
def source(aws):
    aws.s3.create_bucket(Bucket=SOURCE_BUCKET)

    def put(name: str, body: bytes, date: str = DATE) -> None:
        aws.s3.put_object(Bucket=SOURCE_BUCKET, Key=f"fruits/landing/{date}/{name}", Body=body)

    for name, body in FILES.items():
        put(name, body)
    return put


class NoDownloads:
    """The pipeline's hook, refusing anything that would bring an object to the worker."""

    def __init__(self, hook):
        self.hook, self.copies = hook, 0

    def __getattr__(self, name):
        if name in {"download_file", "get_key", "read_key", "sync_to_local_dir", "load_file"}:
            raise AssertionError(f"{name}: an S3 batch must be copied server-side")
        return getattr(self.hook, name)

    def copy_object(self, *args, **kwargs):
        self.copies += 1
        return self.hook.copy_object(*args, **kwargs)


def test_an_s3_batch_is_counted_by_the_jobs_rules_and_a_missing_one_is_zero(hook, source):
    assert batches.count_batch(SOURCE, DATE, hook) == 3
    assert batches.count_batch(SOURCE, "2026-11-25", hook) == 0
    assert batches.count_batch(SOURCE + "/", DATE, hook) == 3  # a trailing slash is the same


def test_a_folder_batch_is_counted_the_same_way(tmp_path):
    for name, body in FILES.items():
        (tmp_path / DATE / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / DATE / name).write_bytes(body)
    assert batches.count_batch(str(tmp_path), DATE, None) == 3
    assert batches.count_batch(str(tmp_path), "2026-11-25", None) == 0


def test_the_latest_s3_batch_is_the_newest_date_prefix(hook, source):
    source("Kiwi/x.jpg", b"x", date="2026-11-30")
    source("Kiwi/y.jpg", b"y", date="2026-02-30")  # not a calendar date
    source("Kiwi/z.jpg", b"z", date="latest")
    assert batches.latest_batch(SOURCE, hook) == "2026-11-30"
    assert batches.latest_batch(f"s3://{SOURCE_BUCKET}/elsewhere", hook) is None


def test_an_s3_batch_is_mirrored_by_server_side_copies_skipping_unchanged(hook, aws, source):
    pipeline = NoDownloads(hook)
    first = batches.mirror_batch(SOURCE, DATE, pipeline, hook, BUCKET, RAW)
    assert (first.uploaded, first.unchanged, first.deleted) == (5, 0, 0)
    assert pipeline.copies == 5
    assert sorted(aws.keys(RAW)) == sorted(RAW + name for name in FILES)
    assert aws.read(RAW + "Pêche/c.jpeg") == b"c"

    again = batches.mirror_batch(SOURCE, DATE, pipeline, hook, BUCKET, RAW)
    assert (again.uploaded, again.unchanged, again.deleted) == (0, 5, 0)
    assert pipeline.copies == 5  # nothing copied twice

    source("Kiwi/a.jpg", b"A" * 10)  # same size, new content: the ETag differs
    aws.s3.delete_object(Bucket=SOURCE_BUCKET, Key=f"fruits/landing/{DATE}/Kiwi/b.png")
    source("Lime/e.jpg", b"e")
    third = batches.mirror_batch(SOURCE, DATE, pipeline, hook, BUCKET, RAW)
    assert (third.uploaded, third.unchanged, third.deleted) == (2, 3, 1)
    assert aws.read(RAW + "Kiwi/a.jpg") == b"A" * 10
    assert RAW + "Kiwi/b.png" not in aws.keys(RAW)


def test_a_missing_source_bucket_is_a_permanent_error(hook):
    from fruits.storage.s3sync import is_permanent

    with pytest.raises(Exception) as caught:
        batches.count_batch("s3://no-such-landing-bucket/x", DATE, hook)
    assert is_permanent(caught.value)
