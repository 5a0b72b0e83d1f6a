"""The spark-submit steps of a run, in EMR's ``AddJobFlowSteps`` format, for both backends.

EMR runs them as they are (``command-runner.jar spark-submit --deploy-mode cluster``,
reading and writing ``s3://`` directly). They write the run's staging prefix
(``runs/_staging/batch=<date>/<run-key>/``), never the published outputs:
publish_batch switches those in once both steps succeeded. The local backend runs the
very same list: :func:`localize` points them at the local master, maps every ``s3://``
URI to a scratch folder, and says which inputs to stage down and which outputs to
upload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fruits.config import raw_prefix, run_uris

ACTION_ON_FAILURE = "CANCEL_AND_WAIT"  # a failed step cancels the later ones, keeps the cluster
OUTPUT_FLAGS = ("--output", "--rejected", "--report", "--csv")
INPUT_FLAGS = ("--input", "--weights", "--py-files")


def spark_submit_step(name: str, py_files: str, script: str, args: list[str]) -> dict[str, Any]:
    return {
        "Name": name,
        "ActionOnFailure": ACTION_ON_FAILURE,
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": [
                "spark-submit",
                "--deploy-mode",
                "cluster",
                "--py-files",
                py_files,
                script,
                *args,
            ],
        },
    }


def build_steps(
    *,
    bucket: str,
    batch: str,
    run_key: str,
    code: Mapping[str, str],
    run: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """featurize then reduce for one batch, writing the run's staging prefix.

    ``run_key``: the run's staging name (plan_run's :func:`fruits.config.new_run_key`).
    ``code``: URIs of ``py_files``, ``featurize``, ``reduce`` and ``weights`` (the
    weights URI, or ``random``). ``run``: ``model``, ``image_size``, ``variance``.
    """
    out = run_uris(bucket, batch, run_key)
    featurize = spark_submit_step(
        f"featurize batch={batch}",
        code["py_files"],
        code["featurize"],
        [
            "--input", f"s3://{bucket}/{raw_prefix(batch)}",
            "--output", out["features"],
            "--rejected", out["rejected"],
            "--model", str(run["model"]),
            "--weights", code["weights"],
            "--image-size", str(run["image_size"]),
        ],
    )  # fmt: skip
    reduce = spark_submit_step(
        f"reduce batch={batch}",
        code["py_files"],
        code["reduce"],
        [
            "--input", out["features"],
            "--output", out["pca"],
            "--report", out["report"],
            "--variance", str(run["variance"]),
            "--rejected", out["rejected"],  # listed in report.json
        ],
    )  # fmt: skip
    return [featurize, reduce]


# --- the local backend's reading of the same steps ------------------------------------


@dataclass
class LocalSteps:
    """The steps rewritten for a local standalone master."""

    commands: list[list[str]]  # one argv per step
    names: list[str]
    inputs: dict[str, Path] = field(default_factory=dict)  # s3:// URI -> where to stage it
    outputs: dict[str, Path] = field(default_factory=dict)  # s3:// URI -> what to publish


def local_path(uri: str, root: Path) -> Path:
    """``s3://bucket/a/b/`` -> ``<root>/bucket/a/b`` (the scratch mirror of the bucket)."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    return root.joinpath(bucket, *[part for part in key.split("/") if part])


def localize(
    steps: list[dict[str, Any]],
    *,
    master_url: str,
    spark_submit: str,
    s3_root: Path,
    extra_conf: Mapping[str, str] | None = None,
) -> LocalSteps:
    """Rewrite EMR steps for ``spark-submit --master spark://...`` in client mode.

    Every ``s3://`` argument becomes a local path under ``s3_root``. Arguments of
    ``--output``-like flags are outputs (published after the steps succeed); other
    ``s3://`` arguments are inputs to stage first, unless an earlier step writes them.
    """
    result = LocalSteps(commands=[], names=[])
    conf = {"spark.driver.host": "127.0.0.1", **(extra_conf or {})}
    for step in steps:
        args = list(step["HadoopJarStep"]["Args"])
        if not args or args[0] != "spark-submit":
            raise ValueError(f"step {step.get('Name')!r}: only spark-submit steps run locally")
        argv = [spark_submit, "--master", master_url]
        for key, value in conf.items():
            argv += ["--conf", f"{key}={value}"]
        rest = args[1:]
        i = 0
        while i < len(rest):
            arg = rest[i]
            if arg == "--deploy-mode":  # Python apps on a standalone master: client mode only
                argv += ["--deploy-mode", "client"]
                i += 2
                continue
            if arg.startswith("s3://"):
                path = local_path(arg, s3_root)
                flag = rest[i - 1] if i else ""
                if arg in result.outputs:
                    pass  # an earlier step's output (reduce reads featurize's)
                elif flag in OUTPUT_FLAGS:
                    result.outputs[arg] = path
                else:
                    result.inputs[arg] = path
                argv.append(str(path))
            else:
                argv.append(arg)
            i += 1
        result.commands.append(argv)
        result.names.append(step["Name"])
    return result


# --- the ec2 backend's reading of the same steps --------------------------------------


def for_standalone(
    steps: list[dict[str, Any]],
    *,
    master_url: str,
    spark_submit: str,
    code_prefix: str,
    code_dir: str,
) -> list[list[str]]:
    """Rewrite EMR steps for ``spark-submit --master spark://<primary>:7077`` on a node
    that has Spark and the s3a connector: client mode (Python apps on a standalone
    master), the job code from the node's copy of ``code_prefix`` (in ``code_dir``), and
    every other ``s3://`` URI read and written through ``s3a://``."""
    commands = []
    for step in steps:
        args = list(step["HadoopJarStep"]["Args"])
        if not args or args[0] != "spark-submit":
            raise ValueError(f"step {step.get('Name')!r}: only spark-submit steps run on ec2")
        argv = [spark_submit, "--master", master_url]
        rest = args[1:]
        i = 0
        while i < len(rest):
            arg = rest[i]
            if arg == "--deploy-mode":
                argv += ["--deploy-mode", "client"]
                i += 2
                continue
            if arg.startswith(code_prefix):
                argv.append(f"{code_dir.rstrip('/')}/{arg[len(code_prefix) :]}")
            elif arg.startswith("s3://"):
                argv.append("s3a://" + arg[len("s3://") :])
            else:
                argv.append(arg)
            i += 1
        commands.append(argv)
    return commands
