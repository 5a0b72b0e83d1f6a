"""The files of a local batch folder, walked with ``os.scandir``.

Why not ``Path.rglob``: a Fruits-360 batch is ~90,000 files, and a ``Path`` object per file
(plus ``relative_to`` and ``stat`` on each) left the Airflow task ~53 MiB larger at 90k
images, against ~13 MiB for names and sizes straight from the directory entries
(docs/performance.md, "Batches at scale"). Memory that grows with the batch is what the
scale benchmark checks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def iter_files(folder: Path) -> Iterator[tuple[str, int]]:
    """(relative POSIX name, size) of every file under ``folder``, in no particular order.
    Symbolic links to files are followed, to folders not (as ``Path.rglob`` in 3.11)."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(folder, rel) if rel else folder) as entries:
            for entry in entries:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append(name)
                elif entry.is_file():
                    yield name, entry.stat().st_size
