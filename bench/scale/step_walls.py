"""Each step's wall time as the local cluster's step runner saw it: from the start of its
``spark-submit`` to its end, JVM start, session, model load and output write included.

The run summary's ``step_seconds`` is the job's own figure (from its progress reports),
which leaves out what happens before the job's first report; the difference is the fixed
cost a small batch pays per step. The runner records ``started`` and ``ended`` (whole
seconds) in ``<scratch>/clusters/<cluster id>/steps/<step id>/state.json`` and the steps'
names in ``steps.json``; the cluster id is ``create_job_flow``'s return value. This is the
local backend's bookkeeping, not a contract: when any of it is missing, the figures are
None and the tables say n/a.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path


def step_walls(scratch: Path, cluster_id: object) -> dict[str, float | None]:
    """Step kind (``featurize``, ``reduce``: the first word of the step's name) -> seconds
    from start to end, or {} when the cluster's files are not there."""
    if not isinstance(cluster_id, str) or not cluster_id or "/" in cluster_id:
        return {}
    folder = scratch / "clusters" / cluster_id
    try:
        steps = json.loads((folder / "steps.json").read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, float | None] = {}
    for step in steps:
        kind = str(step.get("name", "")).split(" ", 1)[0]
        try:
            state = json.loads((folder / "steps" / step["id"] / "state.json").read_text())
            began = datetime.fromisoformat(state["started"])
            ended = datetime.fromisoformat(state["ended"])
            out[kind] = (ended - began).total_seconds()
        except (OSError, ValueError, KeyError, TypeError):
            out[kind] = None
    return out
