"""The switch from a run's staging prefix to the batch's published outputs, against moto:
checked first, published objects replaced, stale ones removed, marker last, staging gone;
and nothing published changes when the staged outputs are incomplete."""

from __future__ import annotations

import io
import json

import pytest
from dag_support import BUCKET

from fruits.storage import publish
from fruits.storage.layout import staging_prefix

DATE = "2026-11-24"
FINAL = f"runs/batch={DATE}/"
MARKER = FINAL + "_SUCCESS"
KEY = "manual__2026-11-24T00-00-00-00-00-0a1b2c3d"
STAGING = staging_prefix(DATE, KEY)
# a report.json as reduce writes it (publish only copies it and reads a few fields)
REPORT = {
    "n_rows": 7, "n_features": 1280, "k": 3, "explained_variance_ratio": [0.5, 0.3, 0.16],
    "cumulative_variance": [0.5, 0.8, 0.96], "model": "mobilenetv2", "weights": "random",
    "labels": {"Banana": 4, "Kiwi": 3},
}  # fmt: skip


def parquet(rows: int, column: str = "features") -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    table = pa.table(
        {"path": [f"s3://{BUCKET}/raw/{i}.jpg" for i in range(rows)], column: [[0.5]] * rows}
    )
    pq.write_table(table, buf)
    return buf.getvalue()


def staged_run(rows: int = 7) -> dict[str, bytes]:
    """What the steps of run KEY leave in staging (Spark's layout: parts and _SUCCESS)."""
    report = {**REPORT, "n_rows": rows,
              "inputs": {"input": f"s3://{BUCKET}/{STAGING}features/",
                         "output": f"s3://{BUCKET}/{STAGING}pca/"}}  # fmt: skip
    return {
        STAGING + "features/part-00000-new-c000.snappy.parquet": parquet(rows - 3),
        STAGING + "features/part-00001-new-c000.snappy.parquet": parquet(3),
        STAGING + "features/_SUCCESS": b"",
        STAGING + "rejected/part-00000-new-c000.snappy.parquet": parquet(2, "error"),
        STAGING + "rejected/_SUCCESS": b"",
        STAGING + "pca/part-00000-new-c000.snappy.parquet": parquet(rows, "pca"),
        STAGING + "pca/_SUCCESS": b"",
        STAGING + "report/report.json": json.dumps(report).encode(),
        STAGING + "report/cumulative_variance.png": b"new png",
    }


EARLIER = {
    FINAL + "features/part-00000-old-c000.snappy.parquet": b"earlier features",
    FINAL + "features/part-00001-old-c000.snappy.parquet": b"earlier features, part 2",
    FINAL + "pca/part-00000-old-c000.snappy.parquet": b"earlier pca",
    FINAL + "report/report.json": b'{"k": 99}',
    FINAL + "report/cumulative_variance.png": b"old png",
    FINAL + "report/pca_scatter.png": b"a plot the new run does not make",
    MARKER: b'{"run_id": "earlier"}',
}


def put(aws, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def snapshot(aws, prefix: str) -> dict[str, bytes]:
    return {key: aws.read(key) for key in aws.keys(prefix)}


def test_publish_replaces_the_batch_removes_stale_objects_marks_it_last(hook, aws, monkeypatch):
    put(aws, EARLIER)
    staged = staged_run()
    put(aws, staged)
    put(aws, {staging_prefix(DATE, "other-run") + "features/x.parquet": b"another run's"})
    calls: list[tuple[str, str]] = []
    for name, key_of in {
        "copy_object": lambda a, kw: a[1],
        "load_string": lambda a, kw: kw["key"],
        "delete_objects": lambda a, kw: ",".join(sorted(kw["keys"])),
    }.items():
        real = getattr(hook, name)

        def spy(*a, _real=real, _name=name, _key=key_of, **kw):
            calls.append((_name, _key(a, kw)))
            return _real(*a, **kw)

        monkeypatch.setattr(hook, name, spy)

    record = publish.publish_batch(hook, BUCKET, DATE, KEY, {"run_id": "manual__new"})

    after = snapshot(aws, FINAL)
    expected = {FINAL + k.removeprefix(STAGING) for k in staged} | {MARKER}
    assert set(after) == expected  # the new set exactly: old parts and the old plot gone
    for key, body in staged.items():
        if not key.endswith("report.json"):
            assert after[FINAL + key.removeprefix(STAGING)] == body
    report = json.loads(after[FINAL + "report/report.json"])
    assert report["inputs"]["input"] == f"s3://{BUCKET}/{FINAL}features/"  # not staging
    assert "_staging" not in after[FINAL + "report/report.json"].decode()
    marker = json.loads(after[MARKER])
    assert marker == record
    assert (marker["run_id"], marker["run_key"], marker["batch"]) == ("manual__new", KEY, DATE)
    assert (marker["rows"], marker["rejected"], marker["k"]) == (7, 2, REPORT["k"])
    assert marker["outputs"]["pca"] == f"s3://{BUCKET}/{FINAL}pca/"
    # order: marker down first; written after every change to the published prefix;
    # then this run's staging deleted (another run's staging is not ours to delete)
    assert calls[0] == ("delete_objects", MARKER)
    marked = calls.index(("load_string", MARKER))
    assert all(name == "delete_objects" for name, _ in calls[marked + 1 :])
    assert [k for _, k in calls[marked + 1 :]] == [",".join(sorted(staged))]
    stale = next(k for n, k in calls if n == "delete_objects" and "old-c000" in k)
    assert calls.index(("delete_objects", stale)) < marked
    assert aws.keys(STAGING) == []
    assert aws.keys("runs/_staging/") == [staging_prefix(DATE, "other-run") + "features/x.parquet"]

    # a retry of the task after it got to the end: nothing to do, same record
    assert publish.publish_batch(hook, BUCKET, DATE, KEY, {"run_id": "manual__new"}) == record
    assert snapshot(aws, FINAL) == after


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (lambda s: s.pop(STAGING + "pca/part-00000-new-c000.snappy.parquet"), "pca/*.parquet"),
        (lambda s: s.pop(STAGING + "report/report.json"), "report/report.json"),
        (
            lambda s: s.update(
                {STAGING + "pca/part-00000-new-c000.snappy.parquet": parquet(5, "pca")}
            ),
            "row counts disagree",
        ),  # fmt: skip
        (lambda s: s.clear(), "nothing staged"),
    ],
)
def test_incomplete_staged_outputs_leave_the_published_batch_untouched(hook, aws, spoil, reason):
    put(aws, EARLIER)
    staged = staged_run()
    spoil(staged)
    put(aws, staged)
    with pytest.raises(publish.BatchNotPublished, match=reason.replace("*", r"\*")):
        publish.publish_batch(hook, BUCKET, DATE, KEY, {"run_id": "manual__new"})
    assert snapshot(aws, FINAL) == EARLIER  # marker included, byte for byte


def test_clear_staging_deletes_other_runs_leftovers_of_the_batch_only(hook, aws):
    put(aws, {
        staging_prefix(DATE, "killed-1") + "features/a.parquet": b"a",
        staging_prefix(DATE, "killed-2") + "pca/b.parquet": b"b",
        staging_prefix(DATE, KEY) + "features/mine.parquet": b"mine",
        staging_prefix("2026-11-23", "other-batch") + "features/c.parquet": b"c",
        **EARLIER,
    })  # fmt: skip
    assert publish.clear_staging(hook, BUCKET, DATE, keep=KEY) == ["killed-1", "killed-2"]
    assert sorted(aws.keys("runs/_staging/")) == [
        staging_prefix("2026-11-23", "other-batch") + "features/c.parquet",
        staging_prefix(DATE, KEY) + "features/mine.parquet",
    ]
    assert snapshot(aws, FINAL) == EARLIER
    assert publish.clear_staging(hook, BUCKET, DATE, keep=KEY) == []


def test_the_summary_records_featurize_rate_and_each_steps_wall_time(hook, aws):
    """The steps' last progress reports (published with the outputs) give the marker,
    report.json and the printed summary real figures to compare runs by."""
    featurize = {"step": "featurize", "finished": True, "done": 7, "total": 7,
                 "elapsed_seconds": 425.04, "average_rate": 211.8}  # fmt: skip
    reduce = {"step": "reduce", "finished": True, "done": 7, "elapsed_seconds": 31.26}
    staged = staged_run()
    staged[STAGING + "progress/featurize.json"] = json.dumps(featurize).encode()
    staged[STAGING + "progress/reduce.json"] = json.dumps(reduce).encode()
    put(aws, staged)

    record = publish.publish_batch(hook, BUCKET, DATE, KEY, {"run_id": "manual__new"})

    marker = json.loads(aws.read(MARKER))
    assert marker["step_seconds"] == {"featurize": 425.0, "reduce": 31.3}
    assert marker["featurize_rate"] == 211.8 and record == marker
    report = json.loads(aws.read(FINAL + "report/report.json"))
    assert report["run"] == {"step_seconds": marker["step_seconds"], "featurize_rate": 211.8}
    assert report["k"] == REPORT["k"]  # the rest as reduce wrote it
    summary = publish.run_summary(hook, BUCKET, DATE, require_marker=True)
    assert "steps: featurize 7 min, reduce 31 s; featurize 211.8 img/s" in (
        publish.format_summary(summary)
    )


def test_the_marker_carries_what_made_the_features(hook, aws):
    """The report's provenance (featurize's metadata, through reduce) reaches the marker,
    hence the batch's asset event: an int8 batch says so, with its fidelity."""
    fidelity = {"cosine_mean": 0.987, "cosine_p1": 0.95, "images": 52, "set": "held-out"}
    made = {"weights_sha256": "d914", "image_size": 224, "runtime": "litert",
            "precision": "int8", "fidelity": fidelity}  # fmt: skip
    staged = staged_run()
    report = {**json.loads(staged[STAGING + "report/report.json"]), **made}
    staged[STAGING + "report/report.json"] = json.dumps(report).encode()
    put(aws, staged)

    record = publish.publish_batch(
        hook, BUCKET, DATE, KEY, {"run_id": "manual__new", "code_version": "0a1b2c3d4e5f"}
    )

    marker = json.loads(aws.read(MARKER))
    assert {key: marker[key] for key in made} == made and record == marker
    assert (marker["model"], marker["weights"], marker["code_version"]) == (
        "mobilenetv2", "random", "0a1b2c3d4e5f",
    )  # fmt: skip
