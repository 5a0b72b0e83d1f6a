"""A Fruits-360-sized synthetic batch, written to disk image by image.

Fruits-360 has 131 labels of 100x100 JPEGs of ~4 KB each (91,700 images, 361 MB). The
size of the files matters here as much as their number: upload, staging and the
decoders move bytes. ``fruits.dev.sample_batch`` draws flat shapes of ~2.6 KB; this
module draws the same shapes and adds a photograph's grain and shading, which brings a
file to ~4 KB (the generator prints the mean it got).

Nothing is held in memory: each label is a task that draws and saves its images one at
a time (a process pool of ``workers``), and returns counts. A finished batch carries a
marker (``.scale-batch.json``, hidden: the pipeline skips it) written last; a batch
whose marker names the same count, labels, seed and drawing is reused as it is, so a
second run of the bench does not write 90k files again.
"""

from __future__ import annotations

import json
import random
import shutil
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fruits.dev.sample_batch import FRUITS, draw_fruit, write_bad_files
from fruits_spark.rules import is_image_path

LABEL_COUNT = 131  # Fruits-360's classes
MARKER = ".scale-batch.json"  # written last: the batch is whole
PARTIAL = ".scale-batch.partial"  # written first: the folder is ours to replace
DRAWING = 1  # bump when the drawing changes: batches drawn before are written again
QUALITY = 92
GRAIN = 20.0  # per-pixel luminance noise on the fruit (sigma, in grey levels)
SHADING = 30.0  # low-frequency light and shade on the fruit (amplitude)

# More Fruits-360-like names after sample_batch's six (which keep a space and a "ê").
_NAMES = (
    "Apple Braeburn", "Apple Golden", "Apricot", "Avocado", "Banana Lady Finger",
    "Cactus fruit", "Cantaloupe", "Carambula", "Cherry", "Chestnut", "Clementine", "Cocos",
    "Dates", "Eggplant", "Fig", "Ginger Root", "Granadilla", "Grape Blue", "Grapefruit Pink",
    "Guava", "Hazelnut", "Huckleberry", "Kaki", "Kohlrabi", "Kumquats", "Lemon", "Lychee",
    "Mandarine", "Mango", "Mangostan", "Maracuja", "Melon Piel de Sapo", "Mulberry",
    "Nectarine", "Orange", "Papaya", "Passion Fruit", "Pear", "Pepino", "Physalis",
    "Pineapple", "Pitahaya Red", "Plum", "Pomegranate", "Quince", "Rambutan", "Raspberry",
    "Redcurrant", "Salak", "Strawberry", "Tamarillo", "Tangelo", "Tomato", "Walnut",
    "Watermelon", "Cauliflower",
)  # fmt: skip
_SHAPES = ("circle", "ellipse", "square")


@dataclass(frozen=True)
class BatchInfo:
    """What the marker records, and what the bench reports about the batch."""

    images: int  # good images
    labels: int
    seed: int
    drawing: int
    bad: dict[str, str]  # relative path -> kind (fruits.dev.sample_batch.write_bad_files)
    image_bytes: int  # of the good images
    seconds: float  # it took to write them (when it was written)
    reused: bool = False  # found whole on disk, not written by this run

    @property
    def mean_bytes(self) -> float:
        return self.image_bytes / self.images if self.images else 0.0


def label_names(n: int = LABEL_COUNT) -> list[str]:
    """``n`` distinct label names: sample_batch's six, then ``<fruit> <k>`` as Fruits-360
    numbers its varieties."""
    names = list(FRUITS)
    k = 1
    while len(names) < n:
        names += [f"{name} {k}" for name in _NAMES]
        k += 1
    return names[:n]


def per_label_counts(n_images: int, n_labels: int) -> list[int]:
    """How many images each label gets: ``n_images`` spread as evenly as can be."""
    if n_labels < 1 or n_images < 0:
        raise ValueError(f"{n_images} images over {n_labels} labels")
    base, extra = divmod(n_images, n_labels)
    return [base + (1 if i < extra else 0) for i in range(n_labels)]


def look(label: str) -> tuple[tuple[int, int, int], str]:
    """A label's colour and shape: sample_batch's for its six, else drawn from the name
    (crc32, not ``hash``: the same on every run and in every process)."""
    if label in FRUITS:
        return FRUITS[label]
    rng = random.Random(zlib.crc32(label.encode()))
    colour = (rng.randint(20, 250), rng.randint(20, 250), rng.randint(20, 250))
    return colour, rng.choice(_SHAPES)


def draw_image(label: str, rng: random.Random, noise: np.random.Generator) -> Image.Image:
    """sample_batch's fruit with grain and shading on it, as on a photograph."""
    colour, shape = look(label)
    img = np.asarray(draw_fruit(colour, shape, rng), dtype=np.float32)
    fruit = (img.sum(axis=2) < 750)[..., None]  # not the white background
    coarse = noise.normal(0, 1, (25, 25)).astype(np.float32)
    shade = np.asarray(Image.fromarray(coarse).resize(img.shape[:2], Image.BICUBIC))
    grain = noise.normal(0, GRAIN, img.shape[:2]).astype(np.float32)
    textured = img + (grain + SHADING * shade)[..., None]
    return Image.fromarray(np.clip(np.where(fruit, textured, img), 0, 255).astype(np.uint8))


def write_label(folder: Path, label: str, count: int, seed: int) -> tuple[int, int]:
    """Draw and save ``count`` images of ``label`` into ``folder/label``, one at a time;
    returns (files, bytes)."""
    out = folder / label
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}:{label}")
    noise = np.random.default_rng([seed, zlib.crc32(label.encode())])
    total = 0
    for n in range(count):
        path = out / f"{n}_100.jpg"
        draw_image(label, rng, noise).save(path, "JPEG", quality=QUALITY)
        total += path.stat().st_size
    return count, total


def _write_label(task: tuple[Path, str, int, int]) -> tuple[int, int]:
    return write_label(*task)


def read_marker(folder: Path) -> BatchInfo | None:
    try:
        data = json.loads((folder / MARKER).read_text())
        return BatchInfo(**{**data, "reused": True})
    except (OSError, ValueError, TypeError):
        return None


def generate_batch(
    folder: Path, n_images: int, *, n_labels: int = LABEL_COUNT, seed: int = 0, workers: int = 2
) -> BatchInfo:
    """The batch of ``n_images`` good images over ``n_labels`` labels, plus the bad files,
    in ``folder``: reused when its marker matches, else (re)written. A folder that holds
    something else (neither marker nor partial marker) is refused, never deleted."""
    found = read_marker(folder)
    if found and (found.images, found.labels, found.seed, found.drawing) == (
        n_images, n_labels, seed, DRAWING
    ):  # fmt: skip
        return found
    if folder.exists() and any(folder.iterdir()):
        if not ((folder / MARKER).exists() or (folder / PARTIAL).exists()):
            raise FileExistsError(f"{folder} holds files the scale bench did not write")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PARTIAL).write_text("being written by bench.scale.batch\n")
    started = time.perf_counter()
    labels = label_names(n_labels)
    counts = per_label_counts(n_images, n_labels)
    tasks = [(folder, label, n, seed) for label, n in zip(labels, counts, strict=True)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            done = list(pool.map(_write_label, tasks, chunksize=1))
    else:
        done = [_write_label(task) for task in tasks]
    bad = write_bad_files(folder, label=labels[0])
    info = BatchInfo(
        images=sum(files for files, _ in done),
        labels=n_labels,
        seed=seed,
        drawing=DRAWING,
        bad=bad,
        image_bytes=sum(size for _, size in done),
        seconds=round(time.perf_counter() - started, 1),
    )
    record = {k: v for k, v in asdict(info).items() if k != "reused"}
    (folder / MARKER).write_text(json.dumps(record, indent=1, ensure_ascii=False))
    (folder / PARTIAL).unlink()
    return info


def image_files(folder: Path) -> Iterator[str]:
    """The relative paths (``<label>/<file>``) of the files the jobs read in the batch:
    an image's extension, nothing hidden (``fruits_spark.rules.is_image_path``)."""
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for entry in sorted(label_dir.iterdir()):
            rel = f"{label_dir.name}/{entry.name}"
            if entry.is_file() and is_image_path(rel):
                yield rel


def expected_outputs(folder: Path, bad: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(good, bad): relative path -> label (its parent folder) of every image the run must
    featurize, and of every file it must reject, read from the folder itself."""
    good: dict[str, str] = {}
    rejected: dict[str, str] = {}
    for rel in image_files(folder):
        (rejected if rel in bad else good)[rel] = rel.split("/", 1)[0]
    return good, rejected
