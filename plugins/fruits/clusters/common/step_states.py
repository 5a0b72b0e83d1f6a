"""A step's states, the rule that says the steps are done, and how a failed or late step
reads in the task log -- once, for every backend.

States are EMR's (``PENDING`` -> ``RUNNING`` -> ``COMPLETED``, or one of
:data:`FAILED_STATES`); the step runner writes them as files for the ``local`` and ``ec2``
backends. Standard library only: it ships to the ``ec2`` nodes beside the runner.

Reports name the same step -- the first failed one, else the first interrupted, else the
first cancelled: the cause before its consequences; on a timeout, the running step --
with the same headline; each backend adds that step's output from where it keeps it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

PENDING, RUNNING, COMPLETED = "PENDING", "RUNNING", "COMPLETED"
FAILED, INTERRUPTED, CANCELLED = "FAILED", "INTERRUPTED", "CANCELLED"
FAILED_STATES = (FAILED, INTERRUPTED, CANCELLED)  # in the order a report names them
TERMINAL = (COMPLETED, *FAILED_STATES)  # a step in one of these never changes again
UNFINISHED = (PENDING, RUNNING)
STDERR_TAIL = 60  # lines of a failed step's stderr shown in the task log
LOG_TAIL = 40  # lines of a daemon's or a step's log shown elsewhere
# log4j lines worth skipping when showing why a step failed
_NOISE = re.compile(r"^\d{2}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} (INFO|DEBUG) |^\s*$")

States = Mapping[str, Mapping]  # step id -> its state.json


def failed_step(step_ids: Sequence[str], states: States) -> str | None:
    """The step whose failure explains the others', or None while none failed."""
    for bad in FAILED_STATES:
        sid = next((s for s in step_ids if states[s]["state"] == bad), None)
        if sid is not None:
            return sid
    return None


def all_done(step_ids: Sequence[str], states: States) -> bool:
    """The steps are done when the last one COMPLETED (a failure cancels those after it)."""
    return states[step_ids[-1]]["state"] == COMPLETED


def headline(step_id: str, state: Mapping) -> str:
    """``step <id> FAILED (exit status N): <reason>``, with what the state says."""
    head = f"step {step_id} {state.get('state')}"
    if state.get("returncode") is not None:
        head += f" (exit status {state['returncode']})"
    if state.get("reason"):
        head += f": {state['reason']}"
    return head


def late_report(
    step_ids: Sequence[str],
    states: States,
    timeout: float,
    report: Callable[[str, Mapping], str],
) -> str:
    """Why the steps are late: ``report(step, state)`` of the running step (or, if none
    runs, of the last one)."""
    running = [s for s in step_ids if states[s]["state"] == RUNNING]
    sid = running[0] if running else step_ids[-1]
    return f"the steps did not finish within {timeout:.0f}s\n" + report(sid, states[sid])


def log_tail(text: str, lines: int) -> str:
    """The last ``lines`` meaningful lines of a log: log4j INFO/DEBUG noise and blank
    lines dropped."""
    kept = [line for line in text.splitlines() if not _NOISE.match(line)]
    return "\n".join(kept[-lines:])


def new_step_ids(backend: str, count: int) -> list[str]:
    """Ids for ``count`` steps, EMR's shape (``s-...``): ``s-<BACKEND><n><random>``."""
    return [f"s-{backend.upper()}{n:02d}{secrets.token_hex(4).upper()}" for n in range(count)]


def file_tail(path: Path, lines: int = LOG_TAIL) -> str:
    """:func:`log_tail` of a log file, or a line saying it does not exist."""
    try:
        return log_tail(path.read_text(errors="replace"), lines)
    except FileNotFoundError:
        return f"({path} does not exist)"
