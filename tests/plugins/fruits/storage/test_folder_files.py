"""The batch folder walk: every file once, by its relative name and size."""

from __future__ import annotations

import os

from fruits.storage.folder_files import iter_files


def test_every_file_once_with_its_size_and_links_to_folders_not_followed(tmp_path):
    batch = tmp_path / "batch"
    files = {"Kiwi/a.jpg": 3, "Kiwi/deep/b.jpg": 5, ".hidden/c.jpg": 1, "top.txt": 0}
    for name, size in files.items():
        (batch / name).parent.mkdir(parents=True, exist_ok=True)
        (batch / name).write_bytes(b"x" * size)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "d.jpg").write_bytes(b"xx")
    os.symlink(outside, batch / "Linked")  # a folder elsewhere: not walked
    os.symlink(outside / "d.jpg", batch / "Kiwi" / "e.jpg")  # a file: followed, its size

    found = list(iter_files(batch))

    assert sorted(found) == sorted([*files.items(), ("Kiwi/e.jpg", 2)])
    assert list(iter_files(outside)) == [("d.jpg", 2)]
