"""Write a synthetic Fruits-360-like batch: ``<label>/<n>.jpg``, 100x100, white background.

Each label is a fruit-coloured shape (jittered in size, position and hue), so the
classes are separable in feature space without downloading any data set.

    python -m fruits.dev.sample_batch data/incoming/2026-11-24 --per-label 20 [--bad] [--odd]
"""

from __future__ import annotations

import argparse
import io
import random
from pathlib import Path

from PIL import Image, ImageDraw

# label -> (RGB colour, shape). Spaces and a non-ASCII letter, as in real folder names.
FRUITS: dict[str, tuple[tuple[int, int, int], str]] = {
    "Apple Red 1": ((190, 30, 40), "circle"),
    "Banana": ((240, 210, 60), "ellipse"),
    "Kiwi": ((120, 90, 40), "circle"),
    "Lime": ((90, 180, 50), "ellipse"),
    "Pêche": ((250, 160, 110), "circle"),
    "Blueberry": ((50, 60, 140), "square"),
}

SIZE = 100


def draw_fruit(colour: tuple[int, int, int], shape: str, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    d = ImageDraw.Draw(img)
    r = rng.randint(28, 44)
    cx, cy = rng.randint(40, 60), rng.randint(40, 60)
    jitter = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in colour)
    box = (
        cx - r,
        cy - r // (2 if shape == "ellipse" else 1),
        cx + r,
        cy + r // (2 if shape == "ellipse" else 1),
    )
    if shape == "square":
        d.rectangle(box, fill=jitter)
    else:
        d.ellipse(box, fill=jitter)
    # a highlight, as on a photographed fruit
    d.ellipse((cx - r // 3, cy - r // 2, cx - r // 6, cy - r // 3), fill=(255, 255, 255))
    return img


def write_batch(
    root: Path, per_label: int = 10, labels: list[str] | None = None, seed: int = 0
) -> list[Path]:
    """Write ``per_label`` JPEGs for each label; returns the files written."""
    rng = random.Random(seed)
    written = []
    for label in labels or list(FRUITS):
        colour, shape = FRUITS.get(label, ((rng.randint(0, 255),) * 3, "circle"))
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_label):
            path = folder / f"{n}_100.jpg"
            draw_fruit(colour, shape, rng).save(path, "JPEG", quality=90)
            written.append(path)
    return written


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_bad_files(root: Path, label: str = "Apple Red 1") -> dict[str, str]:
    """Files that must be rejected (relative path -> kind) plus files that must be skipped."""
    folder = root / label
    folder.mkdir(parents=True, exist_ok=True)
    good = _jpeg_bytes(draw_fruit((190, 30, 40), "circle", random.Random(1)))
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not an image\n")
    bomb = Image.new("1", (10_000, 10_000))  # 100 Mpx, a few kB as PNG
    bomb.save(folder / "bomb.png", "PNG")
    # skipped, not rejected: hidden files and other extensions
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "._0_100.jpg").write_bytes(b"\x00\x05\x16\x07")
    (folder / "README.txt").write_text("not an image extension\n")
    return {
        f"{label}/truncated.jpg": "truncated",
        f"{label}/empty.jpg": "empty",
        f"{label}/notes.jpg": "text",
        f"{label}/bomb.png": "bomb",
    }


def write_odd_images(root: Path, label: str = "Odd Formats") -> list[str]:
    """Images that must be converted, not rejected: modes, sizes, upper-case extensions."""
    folder = root / label
    folder.mkdir(parents=True, exist_ok=True)
    base = draw_fruit((240, 210, 60), "ellipse", random.Random(2))
    base.convert("L").save(folder / "gray.jpg")
    base.convert("RGBA").save(folder / "rgba.png")
    base.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    base.convert("CMYK").save(folder / "cmyk.jpg")
    base.save(folder / "UPPER.JPG")
    base.resize((5000, 4000)).save(folder / "large.jpeg", quality=85)
    base.resize((37, 151)).save(folder / "odd_size.jpg")
    return sorted(p.name for p in folder.iterdir())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", type=Path, help="batch folder to write, e.g. data/incoming/2026-11-24")
    p.add_argument("--per-label", type=int, default=10)
    p.add_argument("--labels", nargs="*", default=None, help=f"default: {', '.join(FRUITS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bad", action="store_true", help="add files that must be rejected")
    p.add_argument("--odd", action="store_true", help="add odd formats that must be converted")
    args = p.parse_args(argv)
    n = len(write_batch(args.root, args.per_label, args.labels, args.seed))
    if args.bad:
        n += len(write_bad_files(args.root))
    if args.odd:
        n += len(write_odd_images(args.root))
    print(f"wrote {n} files under {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
