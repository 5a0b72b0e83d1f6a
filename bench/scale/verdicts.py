"""Does a stage grow linearly with the batch, does a process group's memory stay flat?

**Linear** (:func:`linearity`): the stage's seconds per image at every larger size is
within +-20% (:data:`LINEAR_TOLERANCE`) of its seconds per image at the smallest size.
Above that the stage is *superlinear* (it costs more per image as the batch grows: a
listing that is quadratic, a driver that collects, a store that slows down as it
fills), the finding that matters; below it *sublinear* (a fixed cost, such as a JVM
start or a teardown that does not depend on the batch, still weighs at the small size).
The per-image rule is read at a glance and needs two sizes; a least-squares line
through all sizes (:func:`fit_line`) is reported beside it, as a fixed cost in seconds
plus a marginal cost per image, but the verdict does not rest on it: three points fit
almost any line.

**Flat** (:func:`flatness`): a counted process group's peak RSS at the largest size is
within +-10% (:data:`FLAT_TOLERANCE`) of its peak at the smallest size; above, it
*grows*; below, it *shrinks* (not a problem, but not flat either).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

LINEAR_TOLERANCE = 0.20
FLAT_TOLERANCE = 0.10


@dataclass(frozen=True)
class Verdict:
    verdict: str  # linear | superlinear | sublinear | flat | grows | shrinks | n/a
    detail: str  # what the verdict rests on, for the table

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _usable(points: Mapping[int, float | None]) -> dict[int, float]:
    return {n: float(v) for n, v in sorted(points.items()) if v is not None and n > 0}


def fit_line(points: Mapping[int, float]) -> tuple[float, float] | None:
    """Least squares ``seconds = fixed + per_image * n`` through the points; None with
    fewer than two sizes."""
    xs, ys = list(points), list(points.values())
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my - slope * mx, slope


def _percent(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.0f}%"


def linearity(seconds: Mapping[int, float | None]) -> Verdict:
    """``seconds``: batch size -> the stage's seconds at that size."""
    points = _usable(seconds)
    if len(points) < 2 or min(points.values()) <= 0:
        return Verdict("n/a", "needs two sizes with a time above zero")
    sizes = list(points)
    base = points[sizes[0]] / sizes[0]
    ratios = {n: (points[n] / n) / base for n in sizes[1:]}
    detail = ", ".join(f"{n:,}: {_percent(r)}" for n, r in ratios.items())
    detail = f"s/image vs {sizes[0]:,}'s: {detail}"
    if any(r > 1 + LINEAR_TOLERANCE for r in ratios.values()):
        return Verdict("superlinear", detail)
    if any(r < 1 - LINEAR_TOLERANCE for r in ratios.values()):
        return Verdict("sublinear", detail)
    return Verdict("linear", detail)


def flatness(peaks: Mapping[int, float | None]) -> Verdict:
    """``peaks``: batch size -> the group's peak RSS (any unit) at that size."""
    points = _usable(peaks)
    if len(points) < 2 or min(points.values()) <= 0:
        return Verdict("n/a", "needs the group at two sizes")
    sizes = list(points)
    ratio = points[sizes[-1]] / points[sizes[0]]
    detail = f"{sizes[-1]:,} vs {sizes[0]:,}: {_percent(ratio)}"
    if ratio > 1 + FLAT_TOLERANCE:
        return Verdict("grows", detail)
    if ratio < 1 - FLAT_TOLERANCE:
        return Verdict("shrinks", detail)
    return Verdict("flat", detail)
