"""The steps a cloud backend submitted, run for real on this host by the tests' stand-ins
for EMR and the ec2 nodes (:mod:`dag_support`): moto runs no step, and a test of a step
must run its real ``spark-submit``, never write its output for it.

Nothing here is a second copy of the local backend: the steps are rewritten by
:func:`fruits.clusters.common.spark_steps.localize` (client mode, every s3:// URI mapped
into a scratch mirror of the bucket), their inputs staged with
:func:`fruits.storage.s3sync.stage_down`, started in a session of their own with the
local cluster's environment (:func:`fruits.clusters.local.sparkenv.spark_env`: no
PYTHONPATH, so the jobs import their package from ``--py-files`` as on a cluster), and
their outputs published with :func:`fruits.clusters.local.steps.publish_outputs` (the
folder replaced, ``_SUCCESS`` last, image paths back to their s3:// URIs). Only the
master differs: ``local[2]``, no standalone daemons to start per cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fruits.clusters.common import step_runner
from fruits.clusters.common.spark_steps import OUTPUT_FLAGS, LocalSteps, localize

MASTER = "local[2]"  # the host's two cores; one spark-submit at a time per driver
CONF = {"spark.ui.enabled": "false"}  # no UI port to find, nothing to serve
PROGRESS_EVERY = 1.0  # seconds between copies of a running step's progress to S3
GRACE = 2.0  # seconds a stopped step's process group gets between SIGTERM and SIGKILL


def s3_hook() -> Any:
    """The Airflow connection the DAG uses (``AIRFLOW_CONN_AWS_DEFAULT``: moto)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id="aws_default")


class RealSteps:
    """One cluster's EMR-format steps (``{"Name", "HadoopJarStep": {"Args"}}``), run one
    at a time on a ``local[2]`` master: :meth:`start` one, :meth:`poll` it (the drivers
    look every 0.2 s), then :meth:`publish` its outputs or read its :meth:`output`.
    The scratch folder goes with :meth:`close`."""

    def __init__(self, steps: Sequence[Mapping[str, Any]], hook: Any | None = None):
        self.hook = hook if hook is not None else s3_hook()
        self.steps: list[dict[str, Any]] = []
        self.work = Path(tempfile.mkdtemp(prefix="fruits-real-steps-"))
        self.s3_root = self.work / "s3"
        self.local = LocalSteps(commands=[], names=[])
        for step in steps:
            self.add(step)
        self.proc: subprocess.Popen | None = None
        self.index: int | None = None  # the step started last
        self.progress_at = 0.0

    def add(self, step: Mapping[str, Any]) -> int:
        """One more step (EMR Serverless submits reduce once featurize ended); its new
        inputs staged, an earlier step's outputs read where that step wrote them.
        Returns its index."""
        from fruits.clusters.local.spark_install import spark_bin
        from fruits.storage.s3sync import stage_down

        staged = set(self.local.inputs)
        self.steps.append(dict(step))
        self.local = localize(
            self.steps,
            master_url=MASTER,
            spark_submit=spark_bin("spark-submit"),
            s3_root=self.s3_root,
            extra_conf=CONF,
        )
        for uri, path in self.local.inputs.items():  # code, weights, model, the batch
            if uri not in staged:
                stage_down(self.hook, uri, path)
        return len(self.steps) - 1

    def folder(self, index: int) -> Path:
        return self.work / "steps" / str(index)

    def start(self, index: int) -> None:
        """Start step ``index``'s spark-submit (its stdout and stderr in its folder)."""
        from fruits.clusters.local.sparkenv import spark_env

        assert self.proc is None or self.proc.poll() is not None, "one step at a time"
        folder = self.folder(index)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
            self.proc = subprocess.Popen(
                self.local.commands[index],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=spark_env(),
                start_new_session=True,  # one killpg ends its JVM and Python workers
            )
        self.index = index
        self.progress_at = time.monotonic()

    def poll(self) -> int | None:
        """The running step's exit status once it ended; None while it runs (its live
        progress copied to S3 every :data:`PROGRESS_EVERY` s, as the jobs write it there
        on a cluster)."""
        assert self.proc is not None and self.index is not None
        code = self.proc.poll()
        if code is None and time.monotonic() - self.progress_at >= PROGRESS_EVERY:
            self.progress_at = time.monotonic()
            self.mirror_progress(self.index)
        return code

    def outputs(self, index: int) -> dict[str, Path]:
        """The s3:// outputs step ``index`` names (``--output``, ``--progress``...),
        with their local folders."""
        args = self.steps[index]["HadoopJarStep"]["Args"]
        return {
            uri: self.local.outputs[uri]
            for flag, uri in zip(args, args[1:], strict=False)
            if flag in OUTPUT_FLAGS and uri in self.local.outputs
        }

    def mirror_progress(self, index: int) -> None:
        from fruits.progress import mirror_local

        args = self.steps[index]["HadoopJarStep"]["Args"]
        if "--progress" in args:
            uri = args[args.index("--progress") + 1]
            mirror_local(self.hook, self.local.outputs[uri], uri)

    def publish(self, index: int, leave_out: Sequence[str] = ()) -> dict[str, dict]:
        """Step ``index``'s outputs to their s3:// URIs, as Spark's ``mode("overwrite")``
        leaves them there; ``leave_out``: flags whose output is lost (a fault test)."""
        from fruits.clusters.local.steps import publish_outputs

        args = self.steps[index]["HadoopJarStep"]["Args"]
        lost = {args[args.index(flag) + 1] for flag in leave_out if flag in args}
        outputs = {uri: path for uri, path in self.outputs(index).items() if uri not in lost}
        return publish_outputs(self.hook, outputs, self.s3_root)

    def output(self, index: int, name: str) -> str:
        """Step ``index``'s ``stdout`` or ``stderr``. PySpark's driver merges the job's own
        stderr into spark-submit's stdout: a job's ``error:`` line is in ``stdout``."""
        return (self.folder(index) / name).read_text(errors="replace")

    def stop(self) -> None:
        """End the running step, if any, with everything it started."""
        if self.proc is not None and self.proc.poll() is None:
            step_runner.end_process(self.proc, group=True, grace=GRACE)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)
