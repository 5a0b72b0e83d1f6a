"""S3 sync: only changes go up, multipart ETags, staging down, errors a retry cannot fix."""

from __future__ import annotations

import hashlib

from dag_support import BUCKET

from fruits.storage import s3sync


def test_upload_sends_only_new_or_changed_files_and_mirrors_deletions(hook, aws, tmp_path):
    batch = tmp_path / "2026-11-24"
    for name, data in {
        "Kiwi/a.jpg": b"a" * 10,
        "Kiwi/b.jpg": b"b" * 10,
        "Pêche/c.jpg": b"c",
    }.items():
        (batch / name).parent.mkdir(parents=True, exist_ok=True)
        (batch / name).write_bytes(data)
    prefix = "raw/batch=2026-11-24/"
    first = s3sync.upload_folder(hook, batch, BUCKET, prefix)
    assert (first.uploaded, first.unchanged, first.deleted) == (3, 0, 0)
    assert sorted(aws.keys(prefix)) == [
        prefix + k for k in ("Kiwi/a.jpg", "Kiwi/b.jpg", "Pêche/c.jpg")
    ]
    again = s3sync.upload_folder(hook, batch, BUCKET, prefix)
    assert (again.uploaded, again.unchanged, again.deleted) == (0, 3, 0)
    (batch / "Kiwi/a.jpg").write_bytes(b"A" * 10)  # same size, new content
    (batch / "Kiwi/b.jpg").unlink()
    (batch / "Kiwi/d.jpg").write_bytes(b"d")
    third = s3sync.upload_folder(hook, batch, BUCKET, prefix)
    assert (third.uploaded, third.unchanged, third.deleted) == (2, 1, 1)
    assert aws.read(prefix + "Kiwi/a.jpg") == b"A" * 10
    assert prefix + "Kiwi/b.jpg" not in aws.keys(prefix)


def test_multipart_etag_matches_what_s3_reports(hook, aws, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(hashlib.sha256(b"x").digest() * (12 * 1024 * 1024 // 32))  # 12 MiB
    # a 1 MiB chunk is below S3's 5 MiB minimum part: the transfer (and the ETag) use 5 MiB
    small_parts = {"multipart_threshold": 1024 * 1024, "multipart_chunksize": 1024 * 1024}
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    chunked = S3Hook(aws_conn_id="aws_default", transfer_config_args=small_parts)
    chunked.load_file(big, key="big.bin", bucket_name=BUCKET, replace=True)
    etag = aws.s3.head_object(Bucket=BUCKET, Key="big.bin")["ETag"].strip('"')
    assert etag.endswith("-3")  # really multipart: 5 + 5 + 2 MiB
    assert s3sync.local_etag(big, 1024 * 1024, 1024 * 1024) == etag
    assert s3sync.sync_up(chunked, {"big.bin": big}, BUCKET, "").uploaded == 0


def test_publish_replaces_outputs_and_writes_markers_last(hook, aws, tmp_path, monkeypatch):
    out = tmp_path / "features"
    out.mkdir()
    (out / "part-0-old.parquet").write_bytes(b"old")
    (out / "_SUCCESS").write_bytes(b"")
    (out / ".part-0-old.parquet.crc").write_bytes(b"crc")
    uri = f"s3://{BUCKET}/runs/batch=2026-11-24/features/"
    s3sync.publish_folder(hook, out, uri)
    prefix = "runs/batch=2026-11-24/features/"
    assert sorted(aws.keys(prefix)) == [prefix + "_SUCCESS", prefix + "part-0-old.parquet"]

    for f in out.iterdir():
        f.unlink()
    (out / "part-0-new.parquet").write_bytes(b"new")
    (out / "_SUCCESS").write_bytes(b"")
    calls = []
    real_load, real_delete = hook.load_file, hook.delete_objects
    monkeypatch.setattr(
        hook, "load_file", lambda **kw: calls.append(("put", kw["key"])) or real_load(**kw)
    )
    monkeypatch.setattr(
        hook,
        "delete_objects",
        lambda bucket, keys: calls.append(("delete", tuple(keys))) or real_delete(bucket, keys),
    )
    s3sync.publish_folder(hook, out, uri)
    assert sorted(aws.keys(prefix)) == [prefix + "_SUCCESS", prefix + "part-0-new.parquet"]
    # the marker goes first, comes back last; the old part is gone before it returns
    assert calls[0] == ("delete", (prefix + "_SUCCESS",))
    assert calls[-1] == ("put", prefix + "_SUCCESS")
    deleted_old = calls.index(("delete", (prefix + "part-0-old.parquet",)))
    assert deleted_old < len(calls) - 1


def test_stage_down_copies_a_file_or_a_prefix(hook, aws, tmp_path):
    aws.s3.put_object(Bucket=BUCKET, Key="code/v1/featurize.py", Body=b"print()")
    aws.s3.put_object(Bucket=BUCKET, Key="raw/batch=1/Kiwi/a.jpg", Body=b"a")
    aws.s3.put_object(Bucket=BUCKET, Key="raw/batch=1/Pêche/b.jpg", Body=b"b")
    f = s3sync.stage_down(hook, f"s3://{BUCKET}/code/v1/featurize.py", tmp_path / "f" / "job.py")
    assert f.read_bytes() == b"print()"
    d = s3sync.stage_down(hook, f"s3://{BUCKET}/raw/batch=1/", tmp_path / "raw")
    assert sorted(p.relative_to(d).as_posix() for p in d.rglob("*.jpg")) == [
        "Kiwi/a.jpg",
        "Pêche/b.jpg",
    ]


def test_a_prefix_is_downloaded_in_parallel_and_unchanged_files_are_kept(hook, aws, tmp_path):
    names = [f"raw/batch=1/L{i % 3}/{i}.jpg" for i in range(40)]
    for i, key in enumerate(names):
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=bytes([i]) * (i + 1))
    dest = tmp_path / "raw"
    assert s3sync.download_prefix(hook, BUCKET, "raw/batch=1/", dest) == 40
    for i, key in enumerate(names):
        assert (dest / key.removeprefix("raw/batch=1/")).read_bytes() == bytes([i]) * (i + 1)
    assert s3sync.download_prefix(hook, BUCKET, "raw/batch=1/", dest) == 0  # all there
    (dest / "L0/0.jpg").write_bytes(b"torn")  # another size: fetched again
    assert s3sync.download_prefix(hook, BUCKET, "raw/batch=1/", dest) == 1
    assert (dest / "L0/0.jpg").read_bytes() == bytes([0])


def test_s3_errors_a_retry_cannot_fix_are_told_apart():
    """upload_batch / upload_code fail at once on these, retry on the others."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, EndpointConnectionError

    def wrapped(code: str) -> Exception:  # boto3's upload_file chains the ClientError
        try:
            try:
                raise ClientError({"Error": {"Code": code, "Message": code}}, "PutObject")
            except ClientError as exc:
                raise S3UploadFailedError(f"Failed to upload: {exc}")  # noqa: B904
        except S3UploadFailedError as outer:
            return outer

    assert s3sync.error_code(wrapped("AccessDenied")) == "AccessDenied"
    assert s3sync.is_permanent(wrapped("AccessDenied"))
    assert s3sync.is_permanent(wrapped("NoSuchBucket"))
    assert not s3sync.is_permanent(wrapped("SlowDown"))  # throttled: a retry helps
    assert not s3sync.is_permanent(wrapped("InternalError"))
    assert not s3sync.is_permanent(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))


def test_multipart_uploads_go_one_at_a_time_small_files_in_parallel(tmp_path):
    """Memory: eight managed multipart uploads at once hold up to 80 parts of 8 MB."""
    import threading
    import time
    from types import SimpleNamespace

    from fruits.storage import s3sync

    running: set[str] = set()
    overlaps: dict[str, set[str]] = {}
    lock = threading.Lock()

    def load_file(filename, key, bucket_name, replace):
        with lock:
            for other in running:
                overlaps.setdefault(key, set()).add(other)
                overlaps.setdefault(other, set()).add(key)
            running.add(key)
        time.sleep(0.05)
        with lock:
            running.discard(key)

    hook = SimpleNamespace(load_file=load_file, transfer_config=SimpleNamespace(
        multipart_threshold=1000))  # fmt: skip
    items = []
    for name, size in [("big1", 2000), ("big2", 5000), *((f"s{i}", 10) for i in range(6))]:
        (tmp_path / name).write_bytes(b"x" * size)
        items.append((tmp_path / name, name))
    assert s3sync._upload(hook, "b", items) == 8
    assert not overlaps.get("big1") and not overlaps.get("big2")  # alone, each
    assert any(overlaps.get(f"s{i}") for i in range(6))  # the small ones together
