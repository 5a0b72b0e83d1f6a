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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fruits.settings import rules, runtime_names
from fruits.storage.layout import progress_uri, raw_prefix, run_uris
from fruits.storage.s3sync import split_uri

ACTION_ON_FAILURE = "CANCEL_AND_WAIT"  # a failed step cancels the later ones, keeps the cluster
OUTPUT_FLAGS = ("--output", "--rejected", "--report", "--csv", "--progress")
# URIs that only name things (featurize names its images by the batch's s3:// URI): no
# backend stages, maps or re-schemes them, so every backend's outputs name images alike.
NAME_FLAGS = ("--name-input-as",)


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
    progress_seconds: int = 15,
) -> list[dict[str, Any]]:
    """featurize then reduce for one batch, writing the run's staging prefix.

    ``run_key``: the run's staging name (plan_run's :func:`fruits.storage.layout.new_run_key`).
    ``code``: URIs of ``py_files``, ``featurize``, ``reduce`` and ``weights`` (the
    weights URI, or ``random``). ``run``: ``model``, ``image_size``, ``variance``,
    ``runtime`` and ``precision`` (default: the jobs' defaults), and ``model_file`` on the
    cloud backends (the converted model ``validate_params`` found: featurize runs it and
    never imports TensorFlow; without it, the local backend's driver converts). Both write
    their live progress to
    :func:`fruits.storage.layout.progress_uri` every ``progress_seconds``.
    """
    out = run_uris(bucket, batch, run_key)
    progress = ["--progress", progress_uri(bucket, batch, run_key),
                "--progress-interval", str(progress_seconds)]  # fmt: skip
    images = f"s3://{bucket}/{raw_prefix(batch)}"
    featurize = spark_submit_step(
        f"featurize batch={batch}",
        code["py_files"],
        code["featurize"],
        [
            "--input", images,
            "--name-input-as", images,  # what a staged or s3a:// read still calls them
            "--output", out["features"],
            "--rejected", out["rejected"],
            "--model", str(run["model"]),
            "--runtime", str(run.get("runtime") or runtime_names()[0]),
            # fp32, the jobs' default, is left out: the steps of fp32 runs stay as they were
            *(["--precision", str(run["precision"])]
              if run.get("precision", rules.FP32) != rules.FP32 else []),
            "--weights", code["weights"],
            "--image-size", str(run["image_size"]),
            *(["--model-file", str(run["model_file"])] if run.get("model_file") else []),
            *progress,
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
            *progress,
        ],
    )  # fmt: skip
    return [featurize, reduce]


# --- the same steps on a standalone master (local and ec2 backends) --------------------


def _client_mode(
    step: Mapping[str, Any],
    *,
    master_url: str,
    spark_submit: str,
    conf: Mapping[str, str],
    rewrite: Callable[[str, str], str],
    where: str,
    properties_file: Path | None = None,
) -> list[str]:
    """The step's ``spark-submit`` argv for ``master_url`` in client mode (the only mode
    for Python apps on a standalone master), with ``conf`` (and ``properties_file``'s
    properties below it); every other argument goes through ``rewrite(flag, argument)``
    (``flag``: the argument before it), but the arguments of :data:`NAME_FLAGS`, kept as
    they are. ``where`` names the backend in the error for a step that is no
    ``spark-submit``."""
    args = list(step["HadoopJarStep"]["Args"])
    if not args or args[0] != "spark-submit":
        raise ValueError(f"step {step.get('Name')!r}: only spark-submit steps run {where}")
    argv = [spark_submit, "--master", master_url]
    if properties_file is not None:
        argv += ["--properties-file", str(properties_file)]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    rest = args[1:]
    i = 0
    while i < len(rest):
        if rest[i] == "--deploy-mode":
            argv += ["--deploy-mode", "client"]
            i += 2
            continue
        flag = rest[i - 1] if i else ""
        argv.append(rest[i] if flag in NAME_FLAGS else rewrite(flag, rest[i]))
        i += 1
    return argv


def read_beside(flag: str, uri: str) -> list[str]:
    """What a job reads beside an input it is given: a ``--model-file``'s manifest
    (``<name>.tflite`` -> ``<name>.json``, fruits_spark.inference.driver_model)."""
    return [uri.removesuffix(".tflite") + ".json"] if flag == "--model-file" else []


@dataclass
class LocalSteps:
    """The steps rewritten for a local standalone master."""

    commands: list[list[str]]  # one argv per step
    names: list[str]
    inputs: dict[str, Path] = field(default_factory=dict)  # s3:// URI -> where to stage it
    outputs: dict[str, Path] = field(default_factory=dict)  # s3:// URI -> what to publish


def local_path(uri: str, root: Path) -> Path:
    """``s3://bucket/a/b/`` -> ``<root>/bucket/a/b`` (the scratch mirror of the bucket)."""
    bucket, key = split_uri(uri)
    return root.joinpath(bucket, *[part for part in key.split("/") if part])


def localize(
    steps: list[dict[str, Any]],
    *,
    master_url: str,
    spark_submit: str,
    s3_root: Path,
    extra_conf: Mapping[str, str] | None = None,
    properties_file: Path | None = None,
) -> LocalSteps:
    """Rewrite EMR steps for ``spark-submit --master spark://...`` in client mode, each
    with ``--properties-file`` (the cluster's secret) when given.

    Every ``s3://`` argument becomes a local path under ``s3_root``. Arguments of
    ``--output``-like flags are outputs (published after the steps succeed); other
    ``s3://`` arguments are inputs to stage first, unless an earlier step writes them,
    with what the job reads beside them (:func:`read_beside`: a ``--model-file``'s manifest).
    """
    result = LocalSteps(commands=[], names=[])

    def to_local(flag: str, arg: str) -> str:
        if not arg.startswith("s3://"):
            return arg
        path = local_path(arg, s3_root)
        if arg in result.outputs:
            pass  # an earlier step's output (reduce reads featurize's)
        elif flag in OUTPUT_FLAGS:
            result.outputs[arg] = path
        else:
            result.inputs[arg] = path
            for uri in read_beside(flag, arg):
                result.inputs[uri] = local_path(uri, s3_root)
        return str(path)

    conf = {"spark.driver.host": "127.0.0.1", **(extra_conf or {})}
    for step in steps:
        result.commands.append(
            _client_mode(
                step,
                master_url=master_url,
                spark_submit=spark_submit,
                conf=conf,
                rewrite=to_local,
                where="locally",
                properties_file=properties_file,
            )
        )
        result.names.append(step["Name"])
    return result


def for_standalone(
    steps: list[dict[str, Any]],
    *,
    master_url: str,
    spark_submit: str,
    code_prefix: str,
    code_dir: str,
) -> list[list[str]]:
    """Rewrite EMR steps for ``spark-submit --master spark://<primary>:7077`` on an ec2
    node that has Spark and the s3a connector: client mode, the job code from the node's
    copy of ``code_prefix`` (in ``code_dir``), and every other ``s3://`` URI read and
    written through ``s3a://``."""

    def on_node(_flag: str, arg: str) -> str:
        if arg.startswith(code_prefix):
            return f"{code_dir.rstrip('/')}/{arg[len(code_prefix) :]}"
        if arg.startswith("s3://"):
            return "s3a://" + arg[len("s3://") :]
        return arg

    return [
        _client_mode(
            step,
            master_url=master_url,
            spark_submit=spark_submit,
            conf={},
            rewrite=on_node,
            where="on ec2",
        )
        for step in steps
    ]
