"""Is a published batch whole? Every good image exactly once in features/ with its label,
every bad file in rejected/, pca/ row for row with features/, no duplicates, nothing else.

Only the published outputs are read (``runs/batch=<date>/``, the prefixes of
``fruits.storage.layout``), never ``raw/``: how the batch is stored on the way (one
object per image, packed shards) is the pipeline's business. A row names its image by
its ``path``; whatever comes before it, the path ends in ``<label>/<file>`` (the
pipeline takes the label from the parent folder), and that tail is what is matched
against the batch folder on disk.

:func:`read_outputs` reads the ``path`` and ``label`` columns of the three Parquet
folders from any pyarrow filesystem (moto's S3 here, a temporary folder in the tests);
:func:`check` is pure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from fruits.storage.layout import run_prefix

TABLES = ("features", "rejected", "pca")
COLUMNS = ("path", "label")
EXAMPLES = 3  # rows quoted per kind of problem


def image_key(path: str) -> str:
    """``<label>/<file>``: the last two parts of a row's path."""
    return "/".join(path.rstrip("/").split("/")[-2:])


@dataclass
class Completeness:
    """The counts and, if any, the problems; ``ok`` only with none."""

    counts: dict[str, int] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, items: list[str], total: int | None = None) -> None:
        if items or total:
            n = len(items) if total is None else total
            self.problems[kind] = [f"{n}", *sorted(items)[:EXAMPLES]]

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts, "problems": self.problems}

    def summary(self) -> str:
        if self.ok:
            return "complete"
        return "; ".join(
            f"{kind}: {items[0]} (e.g. {', '.join(items[1:])})" if items[1:] else
            f"{kind}: {items[0]}"
            for kind, items in self.problems.items()
        )  # fmt: skip


def _rows(table: pa.Table | None) -> list[tuple[str, str]]:
    if table is None or table.num_rows == 0:
        return []
    paths = table.column("path").to_pylist()
    labels = table.column("label").to_pylist()
    return [(image_key(p), label) for p, label in zip(paths, labels, strict=True)]


def _duplicates(keys: list[str]) -> list[str]:
    return [key for key, n in Counter(keys).items() if n > 1]


def check(
    good: Mapping[str, str],
    bad: Mapping[str, str],
    outputs: Mapping[str, pa.Table | None],
) -> Completeness:
    """Compare the outputs (``features``, ``rejected``, ``pca`` tables with ``path`` and
    ``label``) with the batch: ``good`` and ``bad`` map ``<label>/<file>`` to its label."""
    result = Completeness()
    rows = {name: _rows(outputs.get(name)) for name in TABLES}
    result.counts = {
        "images": len(good),
        "bad_files": len(bad),
        **{name: len(rows[name]) for name in TABLES},
    }
    features = {key for key, _ in rows["features"]}
    rejected = {key for key, _ in rows["rejected"]}
    pca = {key for key, _ in rows["pca"]}
    result.add("missing from features", [k for k in good if k not in features])
    result.add("bad files not rejected", [k for k in bad if k not in rejected])
    result.add("good images rejected", [k for k in good if k in rejected])
    result.add("unexpected rows in features", sorted(features - set(good)))
    result.add("unexpected rows in rejected", sorted(rejected - set(bad) - set(good)))
    for name in TABLES:
        result.add(f"duplicates in {name}", _duplicates([key for key, _ in rows[name]]))
    for name, expected in (("features", good), ("rejected", bad), ("pca", good)):
        result.add(
            f"wrong labels in {name}",
            sorted({k for k, label in rows[name] if k in expected and label != expected[k]}),
        )
    n_features, n_pca = len(rows["features"]), len(rows["pca"])
    if n_features != n_pca:
        result.add(
            f"pca rows ({n_pca}) != feature rows ({n_features})", [], abs(n_features - n_pca)
        )
    result.add("pca rows not in features", sorted(pca - features))
    result.add("features rows not in pca", sorted(features - pca))
    return result


def read_outputs(filesystem: Any, root: str) -> dict[str, pa.Table | None]:
    """The ``path`` and ``label`` columns of ``<root>/{features,rejected,pca}/`` (Parquet
    parts; hidden files such as Spark's ``_SUCCESS`` skipped); None for a folder that
    does not exist or holds no Parquet."""
    import pyarrow.dataset as ds
    from pyarrow import fs as pafs

    out: dict[str, pa.Table | None] = {}
    for name in TABLES:
        folder = f"{root.rstrip('/')}/{name}"
        info = filesystem.get_file_info(folder)
        if info.type != pafs.FileType.Directory:
            out[name] = None
            continue
        dataset = ds.dataset(folder, filesystem=filesystem, format="parquet",
                             exclude_invalid_files=False)  # fmt: skip
        out[name] = dataset.to_table(columns=list(COLUMNS)) if dataset.files else None
    return out


def s3_filesystem(endpoint: str, key: str, secret: str, region: str) -> Any:
    """pyarrow's S3 filesystem on moto's server: column reads are ranged GETs, so the
    features' vectors are not downloaded to check their paths."""
    from pyarrow import fs as pafs

    scheme, _, host = endpoint.partition("://")
    return pafs.S3FileSystem(access_key=key, secret_key=secret, region=region,
                             endpoint_override=host, scheme=scheme)  # fmt: skip


def published_root(bucket: str, batch: str) -> str:
    """``<bucket>/runs/batch=<date>``: where pyarrow finds the published outputs."""
    return f"{bucket}/{run_prefix(batch).rstrip('/')}"
