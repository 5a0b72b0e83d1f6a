"""The scale bench's synthetic batch: counts, labels, file sizes, bad files, reuse."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from bench.scale.batch import (
    LABEL_COUNT,
    MARKER,
    expected_outputs,
    generate_batch,
    image_files,
    label_names,
    per_label_counts,
)


def test_fruits_360_has_131_distinct_labels_with_spaces_and_a_non_ascii_letter():
    names = label_names()
    assert len(names) == len(set(names)) == LABEL_COUNT == 131
    assert "Apple Red 1" in names and "Pêche" in names


def test_images_spread_over_the_labels_as_evenly_as_can_be():
    assert per_label_counts(300, 131) == [3] * 38 + [2] * 93
    assert sum(per_label_counts(90_000, 131)) == 90_000
    assert per_label_counts(2, 5) == [1, 1, 0, 0, 0]
    with pytest.raises(ValueError):
        per_label_counts(10, 0)


def test_a_small_batch_has_its_counts_labels_sizes_and_bad_files(tmp_path):
    folder = tmp_path / "2026-01-10"
    info = generate_batch(folder, 20, n_labels=6, workers=1)
    assert (info.images, info.labels, info.reused) == (20, 6, False)
    good, bad = expected_outputs(folder, info.bad)
    assert len(good) == 20
    labels = label_names(6)
    assert sorted(set(good.values())) == sorted(labels)
    assert all(rel.split("/")[0] == label for rel, label in good.items())
    assert [sum(1 for label in good.values() if label == name) for name in labels] == [
        4,
        4,
        3,
        3,
        3,
        3,
    ]
    # the undecodable files of fruits.dev.sample_batch, all in the first label's folder
    assert set(bad) == {f"{labels[0]}/{name}" for name in
                        ("empty.jpg", "truncated.jpg", "notes.jpg", "bomb.png")}  # fmt: skip
    assert (folder / labels[0] / "empty.jpg").stat().st_size == 0
    # hidden and non-image files are neither good nor bad: the pipeline skips them
    assert not any("README" in rel or "/." in rel for rel in [*good, *bad])
    sizes = [(folder / rel).stat().st_size for rel in good]
    assert info.image_bytes == sum(sizes)
    # Fruits-360's JPEGs are ~4 KB: textured, not sample_batch's flat ~2.6 KB shapes
    assert 3_000 < info.mean_bytes < 5_500
    with Image.open(folder / next(iter(good))) as img:
        assert (img.format, img.size, img.mode) == ("JPEG", (100, 100), "RGB")


def test_a_batch_is_reused_when_its_marker_matches_and_rewritten_when_not(tmp_path):
    folder = tmp_path / "b"
    generate_batch(folder, 12, n_labels=3, workers=1)
    stamp = (folder / MARKER).stat().st_mtime_ns
    again = generate_batch(folder, 12, n_labels=3, workers=1)
    assert again.reused and again.images == 12
    assert (folder / MARKER).stat().st_mtime_ns == stamp
    bigger = generate_batch(folder, 15, n_labels=3, workers=1)
    assert not bigger.reused
    assert len(list(image_files(folder))) == 15 + len(bigger.bad)
    assert json.loads((folder / MARKER).read_text())["images"] == 15


def test_a_folder_the_bench_did_not_write_is_never_deleted(tmp_path):
    folder = tmp_path / "theirs"
    (folder / "Kiwi").mkdir(parents=True)
    (folder / "Kiwi" / "mine.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        generate_batch(folder, 4, n_labels=2, workers=1)
    assert (folder / "Kiwi" / "mine.jpg").read_bytes() == b"precious"


def test_the_process_pool_writes_the_same_batch(tmp_path):
    one = generate_batch(tmp_path / "one", 10, n_labels=4, workers=1)
    two = generate_batch(tmp_path / "two", 10, n_labels=4, workers=2)
    assert (one.images, one.image_bytes) == (two.images, two.image_bytes)
    assert list(image_files(tmp_path / "one")) == list(image_files(tmp_path / "two"))
