"""The scale bench's completeness check, on small Parquet folders written like the
published outputs (runs/batch=<date>/{features,rejected,pca}/, Spark's hidden files)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

from bench.scale.completeness import check, image_key, published_root, read_outputs

PREFIX = "s3://bucket/raw/batch=2026-01-10/"
GOOD = {"Kiwi/0_100.jpg": "Kiwi", "Kiwi/1_100.jpg": "Kiwi", "Pêche/0_100.jpg": "Pêche",
        "Apple Red 1/0_100.jpg": "Apple Red 1"}  # fmt: skip
BAD = {"Apple Red 1/empty.jpg": "Apple Red 1", "Apple Red 1/notes.jpg": "Apple Red 1"}


def write(root: Path, name: str, rows: list[tuple[str, str]], parts: int = 2) -> None:
    """``rows`` of (relative path, label) as Spark would: several parts and a _SUCCESS."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-0.crc").write_bytes(b"crc")
    for i in range(parts):
        chunk = rows[i::parts]
        table = pa.table({
            "path": [PREFIX + rel for rel, _ in chunk],
            "label": [label for _, label in chunk],
            name if name != "rejected" else "error": [[0.5]] * len(chunk)
            if name != "rejected" else ["cannot decode"] * len(chunk),
        })  # fmt: skip
        pq.write_table(table, folder / f"part-{i:05d}.snappy.parquet")


def outputs(tmp_path: Path, features=None, rejected=None, pca=None) -> dict:
    root = tmp_path / "runs" / "batch=2026-01-10"
    write(root, "features", list(GOOD.items()) if features is None else features)
    write(root, "rejected", list(BAD.items()) if rejected is None else rejected)
    write(root, "pca", list(GOOD.items()) if pca is None else pca)
    return read_outputs(fs.LocalFileSystem(), str(root))


def test_a_whole_batch_passes(tmp_path):
    result = check(GOOD, BAD, outputs(tmp_path))
    assert result.ok, result.problems
    assert result.counts == {"images": 4, "bad_files": 2, "features": 4, "rejected": 2, "pca": 4}
    assert result.summary() == "complete"


def test_a_missing_image_fails(tmp_path):
    rows = list(GOOD.items())[1:]
    result = check(GOOD, BAD, outputs(tmp_path, features=rows, pca=rows))
    assert not result.ok
    assert result.problems["missing from features"] == ["1", "Kiwi/0_100.jpg"]


def test_a_duplicate_fails(tmp_path):
    rows = [*GOOD.items(), ("Kiwi/1_100.jpg", "Kiwi")]
    result = check(GOOD, BAD, outputs(tmp_path, features=rows, pca=rows))
    assert result.problems["duplicates in features"] == ["1", "Kiwi/1_100.jpg"]
    assert "duplicates in pca" in result.problems


def test_a_wrong_label_fails(tmp_path):
    rows = [(rel, "Kiwi" if rel.startswith("Pêche") else label) for rel, label in GOOD.items()]
    result = check(GOOD, BAD, outputs(tmp_path, features=rows))
    assert result.problems == {"wrong labels in features": ["1", "Pêche/0_100.jpg"]}


def test_pca_rows_that_differ_from_the_features_fail(tmp_path):
    result = check(GOOD, BAD, outputs(tmp_path, pca=list(GOOD.items())[:3]))
    assert "pca rows (3) != feature rows (4)" in result.problems
    assert result.problems["features rows not in pca"] == ["1", "Apple Red 1/0_100.jpg"]
    assert "pca rows (3) != feature rows (4): 1" in result.summary()


def test_a_bad_file_that_was_featurized_instead_of_rejected_fails(tmp_path):
    rows = [*GOOD.items(), ("Apple Red 1/notes.jpg", "Apple Red 1")]
    rejected = [("Apple Red 1/empty.jpg", "Apple Red 1")]
    result = check(GOOD, BAD, outputs(tmp_path, features=rows, pca=rows, rejected=rejected))
    assert result.problems["bad files not rejected"] == ["1", "Apple Red 1/notes.jpg"]
    assert result.problems["unexpected rows in features"] == ["1", "Apple Red 1/notes.jpg"]


def test_a_good_image_rejected_fails(tmp_path):
    rows = list(GOOD.items())[:-1]
    rejected = [*BAD.items(), list(GOOD.items())[-1]]
    result = check(GOOD, BAD, outputs(tmp_path, features=rows, pca=rows, rejected=rejected))
    assert result.problems["good images rejected"] == ["1", "Apple Red 1/0_100.jpg"]


def test_an_output_folder_that_is_missing_reads_as_no_rows(tmp_path):
    root = tmp_path / "runs" / "batch=2026-01-10"
    write(root, "features", list(GOOD.items()))
    read = read_outputs(fs.LocalFileSystem(), str(root))
    assert read["rejected"] is None and read["pca"] is None
    result = check(GOOD, BAD, read)
    assert "bad files not rejected" in result.problems
    assert "pca rows (0) != feature rows (4)" in result.problems


@pytest.mark.parametrize("path", [
    "s3://bucket/raw/batch=2026-01-10/Kiwi/0_100.jpg",
    "file:/scratch/s3/bucket/raw/batch=2026-01-10/Kiwi/0_100.jpg",
    "Kiwi/0_100.jpg",
])  # fmt: skip
def test_a_row_is_known_by_its_label_and_file_whatever_the_prefix(path):
    assert image_key(path) == "Kiwi/0_100.jpg"


def test_the_published_root_is_the_layouts_run_prefix():
    assert published_root("b", "2026-01-10") == "b/runs/batch=2026-01-10"
