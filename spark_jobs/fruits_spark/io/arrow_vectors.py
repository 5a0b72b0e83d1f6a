"""Arrow ``list<float>`` columns of feature vectors as numpy matrices, and back.

``mapInArrow`` hands a task its vectors as one Arrow list column: a flat value buffer and
row offsets. Reading it as that buffer reshaped to ``(rows, n_features)`` keeps one
Python object per batch, not one per row (pandas makes a numpy array per row, which
``np.stack`` would copy again). Nothing here needs Spark.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def as_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array of a column, chunked or not."""
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def vectors_to_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The ``(rows, d)`` matrix of a ``list<float|double>`` column whose rows are all
    non-null and of one length ``d``: Arrow's flat value buffer reshaped (no copy for
    float32 without nulls). Null elements come out as NaN. ValueError if rows are null or
    of different lengths."""
    column = as_array(column)
    if column.null_count:
        raise ValueError(f"{column.null_count} null rows")
    n = len(column)
    offsets = np.asarray(column.offsets)  # n + 1 of them, this slice's own
    lengths = np.diff(offsets)
    d = int(lengths[0]) if n else 0
    if n and (lengths != d).any():
        raise ValueError(f"rows of different lengths ({lengths.min()} to {lengths.max()})")
    values = column.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    return values.to_numpy(zero_copy_only=False).reshape(n, d)


def matrix_to_vectors(x: np.ndarray) -> pa.ListArray:
    """The rows of a 2-D float32 array as a ``list<float>`` column (the inverse of
    ``vectors_to_matrix``), built from one buffer and its offsets."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {x.shape}")
    n, d = x.shape
    if n * d >= 2**31:
        raise ValueError(f"{n} x {d} values do not fit int32 list offsets")
    offsets = pa.array((np.arange(n + 1, dtype=np.int64) * d).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)))
