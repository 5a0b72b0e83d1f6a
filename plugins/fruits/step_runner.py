"""Run a local cluster's steps one after another, as EMR does (standard library only).

    python step_runner.py <cluster-dir>

Reads ``<cluster-dir>/steps.json`` (``[{"id", "name", "argv"}]``) and, per step,
writes ``steps/<id>/state.json`` (PENDING -> RUNNING -> COMPLETED | FAILED), with the
command's output in ``steps/<id>/stdout`` and ``steps/<id>/stderr``. A failed step
cancels the ones after it (EMR's CANCEL_AND_WAIT). Started in its own session by the
``add_steps`` task, so it outlives that task and the teardown can end it, and all it
started, with one signal to its process group.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED")


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_state(folder: Path, **state) -> None:
    path = folder / "state.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(state)
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(current, indent=1))
    os.replace(tmp, path)  # readers never see half a file


def read_state(folder: Path) -> dict:
    try:
        return json.loads((folder / "state.json").read_text())
    except FileNotFoundError:
        return {"state": "PENDING"}


def run(cluster_dir: Path) -> int:
    steps = json.loads((cluster_dir / "steps.json").read_text())
    failed = None
    for step in steps:
        folder = cluster_dir / "steps" / step["id"]
        folder.mkdir(parents=True, exist_ok=True)
        if read_state(folder).get("state") in TERMINAL:
            continue
        if failed is not None:
            write_state(folder, state="CANCELLED", reason=f"step {failed} failed", ended=now())
            continue
        write_state(folder, state="RUNNING", started=now(), runner_pid=os.getpid())
        with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
            code = subprocess.call(step["argv"], stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        if code == 0:
            write_state(folder, state="COMPLETED", returncode=0, ended=now())
        else:
            write_state(folder, state="FAILED", returncode=code, ended=now())
            failed = step["id"]
    return 0 if failed is None else 1


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
