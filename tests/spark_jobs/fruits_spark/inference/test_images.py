"""Decoding edge cases, without Spark or TensorFlow."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from fruits.dev.sample_batch import draw_fruit
from fruits_spark.inference.images import (
    ImageRejected,
    decode_image,
    glob_for_extensions,
    has_image_extension,
    is_hidden,
    label_from_path,
)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def fruit() -> Image.Image:
    return draw_fruit((190, 30, 40), "circle", random.Random(0))


def test_decode_matches_the_documented_pillow_recipe(fruit):
    data = encode(fruit, "JPEG", quality=95)
    expected = np.asarray(
        Image.open(io.BytesIO(data)).convert("RGB").resize((64, 64), Image.BILINEAR)
    )
    got = decode_image(data, 64)
    assert got.dtype == np.uint8 and got.shape == (64, 64, 3)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "1", "I;16"])
def test_other_modes_are_converted_to_rgb(fruit, mode):
    img = fruit.convert(mode) if mode != "P" else fruit.convert("P", palette=Image.Palette.ADAPTIVE)
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    out = decode_image(encode(img, fmt), 32)
    assert out.shape == (32, 32, 3)
    if mode == "L":  # grey stays grey: the three channels are equal
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_odd_sizes_and_large_photos_are_resized(fruit):
    assert decode_image(encode(fruit.resize((37, 151)), "PNG"), 50).shape == (50, 50, 3)
    big = encode(fruit.resize((5000, 4000)), "JPEG", quality=80)
    out = decode_image(big, 224)
    assert out.shape == (224, 224, 3)
    # the red fruit is still there after the downscale
    assert out[..., 0].mean() > out[..., 2].mean()


def test_empty_content_is_rejected():
    for empty in (b"", None):
        with pytest.raises(ImageRejected, match="empty file"):
            decode_image(empty, 32)


def test_text_is_rejected():
    with pytest.raises(ImageRejected, match="not an image"):
        decode_image(b"this is not an image\n" * 10, 32)


def test_truncated_jpeg_is_rejected(fruit):
    data = encode(fruit, "JPEG", quality=90)
    with pytest.raises(ImageRejected, match="corrupt image.*truncated"):
        decode_image(data[: len(data) // 2], 32)


def test_decompression_bomb_is_rejected_without_decoding():
    bomb = encode(Image.new("1", (10_000, 10_000)), "PNG")
    assert len(bomb) < 100_000  # tiny on disk, 100 Mpx once decoded
    with pytest.raises(ImageRejected, match="decompression bomb"):
        decode_image(bomb, 32)


def test_glob_matches_image_extensions_in_any_case():
    # Hadoop's GlobFilter has no case-insensitive flag; the job's Spark test reads
    # UPPER.JPG and large.jpeg through this pattern.
    assert glob_for_extensions(("jpg", "png")) == "*.{[jJ][pP][gG],[pP][nN][gG]}"


@pytest.mark.parametrize(
    "name, expected",
    [("a.jpg", True), ("A.JPEG", True), ("x.png", True), ("x.txt", False), ("jpg", False)],
)
def test_has_image_extension(name, expected):
    assert has_image_extension(name) is expected


def test_hidden_files():
    assert is_hidden(".DS_Store") and is_hidden("._x.jpg") and is_hidden("_SUCCESS")
    assert not is_hidden("x.jpg")


@pytest.mark.parametrize(
    "path, label",
    [
        ("file:/data/Apple Red 1/0_100.jpg", "Apple Red 1"),
        ("file:/data/Pêche/1.jpg", "Pêche"),
        ("s3://bucket/raw/batch=2026-11-24/c+d/1.jpg", "c+d"),
        # Spark reports paths unencoded: a literal '%20' in a folder name stays.
        ("file:/data/a%20b/1.jpg", "a%20b"),
    ],
)
def test_label_is_the_parent_folder_as_on_disk(path, label):
    assert label_from_path(path) == label
