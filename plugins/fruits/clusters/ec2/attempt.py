"""One attempt at an ``ec2`` cluster: where its nodes report, and the token that makes
its ``RunInstances`` calls idempotent.

A rerun or a cleared ``create_job_flow`` in the same DAG run launches again under the
same cluster id (the teardown finds every attempt's instances by that tag), but its
nodes report under a log prefix of their own, so a ``ready.json`` or ``failed/`` report
a previous attempt left is never read as this one's. Pure functions: no AWS call.
"""

from __future__ import annotations

import hashlib
import re
import secrets

ATTEMPT_TAG = "fruits:attempt"  # the attempt's name, on each of its instances
_ATTEMPT = re.compile(r"[0-9]+-[0-9a-f]+")


def new_attempt(try_number: int) -> str:
    """``<try number>-<random hex>``: fresh for every execution of the launch task, even
    if a try number repeats (a database reset, a run id reused by hand)."""
    return f"{int(try_number)}-{secrets.token_hex(4)}"


def attempt_prefix(log_prefix: str, attempt: str) -> str:
    """``<cluster log prefix>attempt-<attempt>/``: where this attempt's nodes report."""
    if not log_prefix.endswith("/"):
        raise ValueError(f"not a log prefix (ending with /): {log_prefix!r}")
    if not _ATTEMPT.fullmatch(attempt):
        raise ValueError(f"not an attempt name: {attempt!r}")
    return f"{log_prefix}attempt-{attempt}/"


def client_token(run_id: str, cluster_id: str, try_number: int, role: str) -> str:
    """``RunInstances``' ``ClientToken`` for one role of one attempt: the same for a call
    botocore retries (EC2 then answers with the instances it already launched, never a
    second set), different for the next try of the task. 64 ASCII characters at most."""
    text = "\n".join((run_id, cluster_id, str(int(try_number)), role))
    return f"fruits-{role}-{hashlib.sha256(text.encode()).hexdigest()[:40]}"
