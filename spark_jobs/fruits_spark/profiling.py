"""Opt-in timing lines from Python workers, for ``make bench`` to say where time goes.

A job's worker functions append one JSON object per event to ``<folder>/<pid>.jsonl``
when the folder is named in the environment variable the job reads
(``FRUITS_INFERENCE_PROFILE`` for featurize, ``FRUITS_REDUCE_PROFILE`` for reduce).
Unset, nothing is written and nothing is timed beyond a ``time.time()`` or two.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


def folder_from(env: str) -> str | None:
    return os.environ.get(env) or None


def process_start() -> float | None:
    """When this process started (Linux, epoch seconds), to tell a worker's start-up from
    its imports and its first batch."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


class Profile:
    """Appends one JSON line per event to ``<folder>/<pid>.jsonl``."""

    def __init__(self, folder: str):
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, f"{os.getpid()}.jsonl")

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class TaskTimes:
    """One task of a worker function, timed: when the function was called, when its
    first Arrow batch arrived, how long it computed, rows seen; written as one
    ``{"event": name, ...}`` line by ``done()`` if ``env`` names a folder."""

    def __init__(self, env: str, name: str):
        self.folder = folder_from(env)
        self.name = name
        self.called = time.time()
        self.first_batch: float | None = None
        self.compute_s = 0.0
        self.rows = 0

    def batches(self, batches: Iterable) -> Iterator:
        """``batches``, noting when the first one arrived and how many rows came."""
        for batch in batches:
            if self.first_batch is None:
                self.first_batch = time.time()
            self.rows += batch.num_rows
            yield batch

    @contextmanager
    def computing(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.compute_s += time.perf_counter() - start

    def done(self) -> None:
        if self.folder:
            Profile(self.folder).write(
                {
                    "event": self.name,
                    "process_start": process_start(),
                    "called": self.called,
                    "first_batch": self.first_batch,
                    "end": time.time(),
                    "compute_s": self.compute_s,
                    "rows": self.rows,
                }
            )
