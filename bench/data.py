"""Bench inputs, generated once and cached under ``var/bench/``."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from fruits.dev.sample_batch import FRUITS, write_batch
from fruits_spark.inference.images import has_image_extension, is_hidden

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var" / "bench"


def image_batch(n: int, seed: int = 0) -> Path:
    """A batch of ``n`` 100x100 JPEGs (exactly ``n`` when one of 1..6 labels divides it,
    else rounded up), written once (to a scratch folder, then renamed) and reused."""
    labels = list(FRUITS)
    n_labels = next((k for k in range(len(labels), 0, -1) if n % k == 0), len(labels))
    per_label = math.ceil(n / n_labels)
    folder = VAR / "images" / f"n{per_label * n_labels}-seed{seed}"
    if folder.is_dir():
        return folder
    scratch = folder.with_name(folder.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    write_batch(scratch, per_label=per_label, labels=labels[:n_labels], seed=seed)
    scratch.rename(folder)
    return folder


def image_files(folder: Path) -> list[Path]:
    """The image files the featurize job reads under ``folder``, sorted."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and has_image_extension(p.name)
        and not any(is_hidden(part) for part in p.relative_to(folder).parts)
    )
