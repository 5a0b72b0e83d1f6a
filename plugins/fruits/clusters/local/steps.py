"""The steps on a local cluster (:mod:`.cluster`), as EMR runs them on its own.

- ``add_steps`` -> :func:`add_steps`: the run's EMR-format steps rewritten by
  :func:`fruits.clusters.common.spark_steps.localize`; their s3:// inputs staged to the
  cluster's folder; one runner process (``step_runner.py``, in a process group of its
  own) runs the steps in order, like EMR's step queue. Returns the step ids.
- ``wait_for_step`` -> :func:`check_steps` (the sensor's poke; :func:`wait_for_steps`
  blocks on it) then :func:`upload_outputs`: reads the steps' state files; a failed step
  fails the task with its stderr; on success the outputs go to their s3:// URIs, the
  run's staging prefix (local Spark has no s3a connector here), which
  ``publish_batch`` switches in, as on EMR.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fruits.clusters.common import step_reports, step_runner
from fruits.clusters.common.spark_steps import localize
from fruits.clusters.local.cluster import ClusterError, read_cluster, write_cluster
from fruits.clusters.local.process_groups import alive, spawn
from fruits.clusters.local.spark_install import spark_bin
from fruits.clusters.local.sparkenv import spark_env
from fruits.storage import s3sync

log = logging.getLogger(__name__)

# The steps' drivers (client mode: the spark-submit JVM) on the serial collector, from a
# small first heap kept close to what is live (at most 30% free after a collection). They
# hold little (task results, Parquet footers, the report's sample), but G1 sized its
# young generation from Java's default first heap (1/64 of the host's memory): reduce's
# driver on 90,000 rows of features touched 670 MiB, against 457 MiB now (484 with the
# serial collector's default ratios), its run no slower (docs/performance.md, "Batches at
# scale"). A driver's collections on a heap this size take milliseconds.
DRIVER_JAVA_OPTIONS = "-XX:+UseSerialGC -Xms32m -XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=30"


class StepFailed(RuntimeError):
    """A step ended in FAILED, CANCELLED or INTERRUPTED; the message carries its stderr."""


def add_steps(
    scratch: Path,
    cluster_id: str,
    steps: list[dict[str, Any]],
    stage: Callable[[str, Path], Any],
    driver_memory: str = "1g",
) -> list[str]:
    """Stage the steps' inputs (``stage(uri, path)``), start the runner; return step ids.
    ``driver_memory``: the steps' ``spark.driver.memory`` (``FRUITS_LOCAL_DRIVER_MEMORY``)."""
    info = read_cluster(scratch, cluster_id)
    folder = Path(info["dir"])
    if not (alive(info["processes"].get("master")) and alive(info["processes"].get("worker"))):
        raise ClusterError(f"cluster {cluster_id} is not running (state {info.get('state')})")
    if info.get("steps"):
        raise ClusterError(f"cluster {cluster_id} already runs steps {info['steps']}")
    local = localize(
        steps,
        master_url=info["master_url"],
        spark_submit=spark_bin("spark-submit"),
        s3_root=folder / "s3",
        extra_conf={
            "spark.ui.enabled": "false",
            "spark.executor.memory": "1g",
            "spark.driver.memory": driver_memory,
            "spark.driver.extraJavaOptions": DRIVER_JAVA_OPTIONS,
        },
        properties_file=Path(info["properties_file"]),  # the cluster's secret
    )
    for uri, path in local.inputs.items():
        log.info("staging %s -> %s", uri, path)
        stage(uri, path)
    for path in local.outputs.values():  # a re-run never sees an older run's files
        shutil.rmtree(path, ignore_errors=True)
    ids = step_reports.new_step_ids("local", len(local.commands))
    spec = [
        {"id": sid, "name": name, "argv": argv}
        for sid, name, argv in zip(ids, local.names, local.commands, strict=True)
    ]
    for sid in ids:
        (folder / "steps" / sid).mkdir(parents=True, exist_ok=True)
        step_runner.write_state(folder / "steps" / sid, state=step_runner.PENDING)
    (folder / "steps.json").write_text(json.dumps(spec, indent=1))
    (folder / "outputs.json").write_text(
        json.dumps({uri: str(path) for uri, path in local.outputs.items()}, indent=1)
    )
    info["processes"]["steps"] = spawn(
        [sys.executable, step_runner.__file__, str(folder)],
        folder / "logs" / "steps.log",
        spark_env(),
    )
    info["steps"] = ids
    info["state"] = "RUNNING"
    write_cluster(folder, info)
    for item in spec:
        log.info("step %s (%s): %s", item["id"], item["name"], " ".join(item["argv"]))
    return ids


def read_step_states(scratch: Path, cluster_id: str, step_ids: list[str]) -> dict[str, dict]:
    """Each step's state; a step left RUNNING by a runner that is gone becomes INTERRUPTED."""
    info = read_cluster(scratch, cluster_id)
    folder = Path(info["dir"])
    runner_alive = alive(info["processes"].get("steps"))
    states = {}
    for sid in step_ids:
        state = step_runner.read_state(folder / "steps" / sid)
        if state["state"] in step_runner.UNFINISHED and not runner_alive:
            # re-read: the runner may have finished between the two looks
            state = step_runner.read_state(folder / "steps" / sid)
            if state["state"] in step_runner.UNFINISHED:
                step_runner.write_state(
                    folder / "steps" / sid,
                    state=step_runner.INTERRUPTED,
                    reason="the step runner is gone (cluster removed or worker restarted)",
                )
                state = step_runner.read_state(folder / "steps" / sid)
        states[sid] = state
    return states


def failure_report(scratch: Path, cluster_id: str, step_id: str, state: Mapping) -> str:
    """The step's headline, the ``error:`` lines of its output, and its stderr's tail."""
    folder = Path(read_cluster(scratch, cluster_id)["dir"]) / "steps" / step_id
    errors = [
        line
        for name in ("stderr", "stdout")
        if (folder / name).exists()
        for line in (folder / name).read_text(errors="replace").splitlines()
        if line.startswith("error:")
    ]
    parts = [step_reports.headline(step_id, state)]
    if errors:
        parts.append("\n".join(errors))
    stderr = step_runner.file_tail(folder / "stderr")
    parts.append(f"--- stderr tail ({folder / 'stderr'}) ---\n{stderr}")
    return "\n".join(parts)


def check_steps(
    scratch: Path, cluster_id: str, step_ids: list[str], seen: dict[str, str] | None = None
) -> dict[str, dict] | None:
    """One look at the steps: their states once the last one completed, None while they
    run; StepFailed (with the failed step's stderr) if one failed, was cancelled or
    interrupted. ``seen`` (step id -> state last logged) keeps the log to changes."""
    seen = {} if seen is None else seen
    states = read_step_states(scratch, cluster_id, step_ids)
    for sid, state in states.items():
        if seen.get(sid) != state["state"]:
            log.info("step %s: %s", sid, state["state"])
            seen[sid] = state["state"]
            if state["state"] == step_runner.COMPLETED:
                folder = Path(read_cluster(scratch, cluster_id)["dir"]) / "steps" / sid
                log.info("step %s output:\n%s", sid, step_runner.file_tail(folder / "stdout", 5))
    sid = step_reports.failed_step(step_ids, states)
    if sid is not None:
        raise StepFailed(failure_report(scratch, cluster_id, sid, states[sid]))
    return states if step_runner.all_done(step_ids, states) else None


def timeout_report(scratch: Path, cluster_id: str, step_ids: list[str], timeout: float) -> str:
    """Why the steps are late: the running step's (or the last step's) state and stderr."""
    return step_reports.late_report(
        step_ids,
        read_step_states(scratch, cluster_id, step_ids),
        timeout,
        lambda sid, state: failure_report(scratch, cluster_id, sid, state),
    )


def wait_for_steps(
    scratch: Path,
    cluster_id: str,
    step_ids: list[str],
    *,
    timeout: float,
    poke_interval: float = 2.0,
) -> dict[str, dict]:
    """Block until the last step completes; StepFailed (with the failed step's stderr)
    if a step fails or the timeout passes."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while True:
        states = check_steps(scratch, cluster_id, step_ids, seen)
        if states is not None:
            return states
        if time.monotonic() > deadline:
            raise StepFailed(timeout_report(scratch, cluster_id, step_ids, timeout))
        time.sleep(poke_interval)


def upload_outputs(scratch: Path, cluster_id: str, hook: Any) -> dict[str, dict]:
    """Send each step output folder to its s3:// URI (the run's staging prefix: the
    published outputs change only in publish_batch)."""
    folder = Path(read_cluster(scratch, cluster_id)["dir"])
    outputs = json.loads((folder / "outputs.json").read_text())
    # Uploading mirrors: an empty folder would wipe what is there. Refuse unless every
    # output is there (a retry after the teardown removed them, say).
    missing = [uri for uri, path in outputs.items() if not any(Path(path).glob("[!._]*"))]
    if missing:
        raise ClusterError(
            f"cluster {cluster_id}: no local output for {', '.join(missing)} (removed with "
            "the cluster?); nothing uploaded. Clear the whole run to compute them again."
        )
    return publish_outputs(hook, {uri: Path(path) for uri, path in outputs.items()}, folder / "s3")


def publish_outputs(hook: Any, outputs: Mapping[str, Path], s3_root: Path) -> dict[str, dict]:
    """Publish each local output folder of steps that :func:`localize` rewrote for
    ``s3_root`` to its s3:// URI, as the jobs would have written it there: the folder
    replaced, markers last. The Parquet outputs already name images by their s3:// URIs
    (featurize's ``--name-input-as``), so they go as they are; only the report, which
    names the steps' arguments, is rewritten (:func:`rewrite_report`). The tests' EMR and
    ec2 stand-ins publish their real steps' outputs through it too."""
    uploaded = {}
    for uri, path in outputs.items():
        rewrite_report(path, s3_root)
        uploaded[uri] = s3sync.publish_folder(hook, path, uri).as_dict()
    return uploaded


def rewrite_report(output: Path, s3_root: Path) -> None:
    """Make an output's ``report.json`` name the steps' inputs and outputs as on EMR: the
    jobs were given staged copies (``<s3_root>/bucket/key``), the report says
    ``s3://bucket/key``. The rewritten file's Hadoop checksum (``.report.json.crc``) goes
    with it: a later step that read the folder would otherwise fail with a
    ChecksumException."""
    report = output / "report.json"
    if report.exists():
        root = str(s3_root).rstrip("/")
        report.write_text(re.sub(f"(file:)?{re.escape(root)}/", "s3://", report.read_text()))
        report.with_name(f".{report.name}.crc").unlink(missing_ok=True)
