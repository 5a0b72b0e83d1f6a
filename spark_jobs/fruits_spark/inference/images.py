"""Image decoding, kept free of Spark and TensorFlow so it is testable on its own.

The decoding the job promises: ``Image.open(f).convert("RGB").resize((N, N), BILINEAR)``;
the tests and the bench compare the job's features with a plain ``model.predict`` of
arrays decoded by this very function.
Anything Pillow cannot decode raises :class:`ImageRejected` with a readable reason,
so the job lists the file as rejected instead of stopping or emitting zeros.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable

import numpy as np
from PIL import Image

from fruits_spark.rules import IMAGE_EXTENSIONS, has_image_extension, is_hidden

__all__ = ["IMAGE_EXTENSIONS", "has_image_extension", "is_hidden"]  # fruits_spark.rules'

# Pillow warns above this many pixels and raises above twice as many. We reject
# from the first threshold: a 100x100 fruit photo never comes near 89 Mpx, a bomb does.
MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485


class ImageRejected(ValueError):
    """An input file that cannot become an image; the message says why."""


def glob_for_extensions(extensions: Iterable[str] = IMAGE_EXTENSIONS) -> str:
    """A Hadoop glob matching file names with any of the extensions, in any case.

    Hadoop's GlobFilter has no case-insensitive flag, so ``jpg`` becomes ``[jJ][pP][gG]``.
    """

    def any_case(ext: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in ext)

    return "*.{" + ",".join(any_case(e) for e in extensions) + "}"


def decode_image(content: bytes | None, size: int) -> np.ndarray:
    """Bytes of an image file -> uint8 array (size, size, 3), or ImageRejected."""
    if not content:
        raise ImageRejected("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ImageRejected(
                        f"decompression bomb: {width}x{height} pixels exceeds {MAX_PIXELS}"
                    )
                # convert() of an RGB image is a full copy (~70 MB for a 24 Mpx photo)
                rgb = img if img.mode == "RGB" else img.convert("RGB")
                rgb = rgb.resize((size, size), Image.BILINEAR)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"decompression bomb: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageRejected("not an image: Pillow cannot identify the file") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated or corrupt data surfaces from convert() as OSError / ValueError.
        raise ImageRejected(f"corrupt image: {type(exc).__name__}: {exc}") from exc
    return np.asarray(rgb, dtype=np.uint8)


def label_from_path(path: str) -> str:
    """The parent folder's name, exactly as on disk (spaces and non-ASCII letters kept).

    Spark 3.5 and 4 both report ``path`` as Hadoop's ``Path.toString()``: a URI whose
    segments are not percent-encoded, so a folder named ``a%20b`` stays ``a%20b``.
    """
    parts = path.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else ""
