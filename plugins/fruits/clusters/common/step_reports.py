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
from typing import Any

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


def s3_log_tail(s3: Any, bucket: str, key: str, wait: float, service: str = "EMR") -> str:
    """The tail of a step's stderr, which EMR (or EMR Serverless) copies to S3 some time
    after the step ended (gzipped or not): waits up to ``wait`` seconds for it (``s3``: an
    S3Hook)."""
    import gzip
    import time

    from fruits.clusters.common.step_runner import STDERR_TAIL, log_tail

    deadline = time.monotonic() + float(wait)
    while not s3.check_for_key(key, bucket_name=bucket):
        if time.monotonic() >= deadline:
            return f"(no step stderr yet at s3://{bucket}/{key}; {service} uploads it later)"
        time.sleep(min(15.0, max(1.0, float(wait) / 10)))
    data = s3.get_key(key, bucket_name=bucket).get()["Body"].read()
    try:
        text = gzip.decompress(data).decode("utf-8", errors="replace")
    except OSError:
        text = data.decode("utf-8", errors="replace")
    return f"--- s3://{bucket}/{key} (tail) ---\n{log_tail(text, STDERR_TAIL)}"
