"""A batch folder as the pipeline sees it: the images it holds, by the jobs' own rules."""

from __future__ import annotations

from pathlib import Path

from fruits.settings import rules


def count_images(folder: Path) -> int:
    """Image files in a batch folder, by the jobs' own rules (extension; hidden skipped)."""
    if not folder.is_dir():
        return 0
    n = 0
    for path in folder.rglob("*"):
        parts = path.relative_to(folder).parts
        if (
            path.is_file()
            and not any(rules.is_hidden(part) for part in parts)
            and rules.has_image_extension(path.name)
        ):
            n += 1
    return n
