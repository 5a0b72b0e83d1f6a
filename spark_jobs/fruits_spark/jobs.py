"""What every job's entry point shares: one kind of user error, one way to report it."""

from __future__ import annotations

import sys
from collections.abc import Callable


class JobError(Exception):
    """A problem the user can fix (bad argument, missing input); printed without a traceback."""


def run_job(main: Callable[[], int]) -> int:
    try:
        return main()
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
