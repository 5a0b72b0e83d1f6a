"""How a failed or late step reads in the task log, and the steps' ids, for every backend
(the states themselves and the done rule are the step runner's:
:mod:`fruits.clusters.common.step_runner`).

Reports name the same step -- the first failed one, else the first interrupted, else the
first cancelled: the cause before its consequences; on a timeout, the running step --
with the same headline; each backend adds that step's output from where it keeps it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence

from fruits.clusters.common.step_runner import FAILED_STATES, RUNNING

States = Mapping[str, Mapping]  # step id -> its state.json


def failed_step(step_ids: Sequence[str], states: States) -> str | None:
    """The step whose failure explains the others', or None while none failed."""
    for bad in FAILED_STATES:
        sid = next((s for s in step_ids if states[s]["state"] == bad), None)
        if sid is not None:
            return sid
    return None


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


def new_step_ids(backend: str, count: int) -> list[str]:
    """Ids for ``count`` steps, EMR's shape (``s-...``): ``s-<BACKEND><n><random>``."""
    return [f"s-{backend.upper()}{n:02d}{secrets.token_hex(4).upper()}" for n in range(count)]
