"""The run's parameters: the trigger form (``Param``\\ s) and the checks a run makes first.

The form's JSON schema already refuses bad values in the UI. The ``validate_params``
task checks again (a run can be triggered through the API or the CLI with any
``conf``) and also checks what a schema cannot: that the weights can be read. Every
error names the parameter, and comes before any cluster exists.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fruits.settings import (
    Settings,
    jobs_module,
    model_names,
    precision_names,
    rules,
    runtime_names,
)
from fruits.storage.s3sync import split_uri

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SOURCE_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|/.*)$"
WEIGHTS_KEYWORDS = ("imagenet", "random")


class ParamError(ValueError):
    """A run parameter with a value the pipeline cannot use; the message names it."""

    def __init__(self, name: str, message: str):
        self.param = name
        super().__init__(f"param {name!r}: {message}")


@dataclass(frozen=True)
class RunParams:
    batch: str  # YYYY-MM-DD
    source: str  # where batches wait: a folder or s3://bucket/prefix (FRUITS_INCOMING)
    model: str
    runtime: str  # fruits_spark.rules.RUNTIMES: auto | litert | keras
    weights: str  # imagenet | random | s3://bucket/key.h5 | /abs/path.h5
    image_size: int
    variance: float
    precision: str = "fp32"  # fruits_spark.rules.PRECISIONS: fp32 | int8 (docs/precision.md)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def trigger_form(settings: Settings) -> dict[str, Any]:
    """The DAG's ``params``: what the trigger form shows, with types, bounds and help."""
    from airflow.sdk import Param

    return {
        "batch_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Batch date",
            description=(
                "Which batch to process: <source>/<YYYY-MM-DD>/. Empty: the run's "
                "logical date, or, without one, the latest batch in the source."
            ),
        ),
        "source": Param(
            None,
            type=["null", "string"],
            pattern=SOURCE_PATTERN,
            title="Source",
            description=(
                "Where the batches wait, for this run only: s3://bucket/prefix (copied "
                "server-side) or an absolute folder on the Airflow worker. Empty: "
                f"FRUITS_INCOMING ({settings.incoming})."
            ),
        ),
        "model": Param(
            settings.model,
            type="string",
            enum=list(model_names()),
            title="Model",
            description="The CNN whose pooled activations become the features.",
        ),
        "runtime": Param(
            settings.runtime,
            type="string",
            enum=list(runtime_names()),
            title="Runtime",
            description=(
                "What runs the CNN: auto (local: the model's faster runtime, keras for "
                "vgg16, litert otherwise; emr and ec2: always litert, on the model "
                "`make stage-weights` converted), litert (a converted model, ~4x Keras' "
                "speed for MobileNets on a CPU, same features) or keras (Keras itself: "
                "the local backend only)."
            ),
        ),
        "precision": Param(
            settings.precision,
            type="string",
            enum=list(precision_names()),
            title="Precision",
            description=(
                "fp32: the network's own features (the default). int8: a quantized model, "
                "~2x fp32's speed on CPUs with int8 instructions, features within a measured "
                "distance of fp32's (cosine ~0.98; the report carries the figure); "
                "mobilenet only, on LiteRT. docs/precision.md has the table."
            ),
        ),
        "weights": Param(
            settings.weights,
            type="string",
            minLength=1,
            pattern=r"^(imagenet|random|s3://[^/]+/.+\.h5|/.+\.h5|file:///.+\.h5)$",
            title="Weights",
            description=(
                "imagenet (local: Keras' cached file on the Airflow worker; emr and ec2: "
                "the copy `make stage-weights` put in s3://<bucket>/models/), random "
                "(seeded; tests and demos only) or the s3:// URI / absolute path of a .h5 file."
            ),
        ),
        "variance": Param(
            settings.variance,
            type="number",
            exclusiveMinimum=rules.VARIANCE_RANGE[0],
            maximum=rules.VARIANCE_RANGE[1],
            title="Explained variance",
            description="PCA keeps the fewest components explaining at least this share.",
        ),
        "image_size": Param(
            settings.image_size,
            type="integer",
            minimum=rules.IMAGE_SIZE_RANGE[0],
            maximum=rules.IMAGE_SIZE_RANGE[1],
            title="Image size",
            description="Images are resized to N x N pixels before the CNN (224 = ImageNet's).",
        ),
    }


def _number(name: str, value: Any, kind: type) -> float | int:
    if isinstance(value, bool) or value is None:
        raise ParamError(name, f"expected a {kind.__name__}, got {value!r}")
    if isinstance(value, str):
        try:
            value = kind(value.strip())
        except ValueError:
            raise ParamError(name, f"expected a {kind.__name__}, got {value!r}") from None
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ParamError(name, f"expected an integer, got {value!r}")
        value = int(value)
    if not isinstance(value, int | float):
        raise ParamError(name, f"expected a {kind.__name__}, got {value!r}")
    return kind(value)


def parse_date(name: str, value: Any) -> str:
    if not isinstance(value, str) or not DATE_RE.match(value.strip()):
        raise ParamError(name, f"expected a date YYYY-MM-DD, got {value!r}")
    try:
        return dt.date.fromisoformat(value.strip()).isoformat()
    except ValueError as exc:
        raise ParamError(name, f"{value!r} is not a calendar date ({exc})") from None


def resolve_batch(
    value: Any, logical_date: dt.datetime | None, latest: Callable[[], str | None]
) -> str:
    """The batch a run processes: the ``batch_date`` parameter, else the logical date,
    else (a manual run without one) the latest batch in the source (``latest()``), else
    today (UTC)."""
    if value not in (None, ""):
        return parse_date("batch_date", value)
    if logical_date is not None:
        return logical_date.astimezone(dt.UTC).date().isoformat()
    return latest() or dt.datetime.now(dt.UTC).date().isoformat()


def parse_source(value: Any, default: str) -> str:
    """The run's source: the ``source`` parameter, else ``FRUITS_INCOMING``."""
    if value in (None, ""):
        return default
    if not isinstance(value, str) or not re.match(SOURCE_PATTERN, value.strip()):
        raise ParamError(
            "source", f"expected s3://bucket/prefix or an absolute folder, got {value!r}"
        )
    return value.strip().rstrip("/") or "/"


def parse_weights(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ParamError("weights", f"expected imagenet, random or a .h5 URI, got {value!r}")
    value = value.strip()
    if value in WEIGHTS_KEYWORDS:
        return value
    if value.startswith("file://"):
        value = value[len("file://") :]
    if value.startswith("s3://"):
        bucket, key = split_uri(value)
        if not bucket or not key:
            raise ParamError("weights", f"{value!r} is not an s3://bucket/key URI")
    elif not value.startswith("/"):
        raise ParamError(
            "weights",
            f"{value!r}: expected imagenet, random, an s3:// URI or an absolute path",
        )
    if not value.endswith(".h5"):
        raise ParamError("weights", f"{value!r}: Keras weights files end in .h5")
    return value


def validate(
    raw: Mapping[str, Any],
    *,
    logical_date: dt.datetime | None,
    settings: Settings,
    latest: Callable[[str], str | None] | None = None,
) -> RunParams:
    """Check the run's parameters (form values or any ``conf``); ParamError names the bad
    one. ``latest(source)``: the newest batch there (default: folders only)."""
    from fruits.storage.batches import latest_batch

    source = parse_source(raw.get("source"), settings.incoming)
    find_latest = latest or latest_batch
    model = raw.get("model", settings.model)
    if model not in model_names():
        raise ParamError("model", f"{model!r} is not one of {', '.join(model_names())}")
    runtime = raw.get("runtime", settings.runtime)
    if runtime not in runtime_names():
        raise ParamError("runtime", f"{runtime!r} is not one of {', '.join(runtime_names())}")
    precision = raw.get("precision", settings.precision)
    if error := rules.precision_error(precision, model, runtime):
        raise ParamError("precision", error)
    variance = _number("variance", raw.get("variance", settings.variance), float)
    if error := rules.variance_error(variance):
        raise ParamError("variance", error)
    image_size = _number("image_size", raw.get("image_size", settings.image_size), int)
    if error := rules.image_size_error(image_size):
        raise ParamError("image_size", error)
    return RunParams(
        batch=resolve_batch(raw.get("batch_date"), logical_date, lambda: find_latest(source)),
        source=source,
        model=model,
        runtime=runtime,
        weights=parse_weights(raw.get("weights", settings.weights)),
        image_size=image_size,
        variance=variance,
        precision=precision,
    )


def check_runtime_on_nodes(runtime: str) -> None:
    """ParamError('runtime') for ``keras`` on a cloud backend: its nodes have no Keras
    (spark_jobs/requirements.txt); they run the converted model on LiteRT."""
    if runtime == rules.KERAS:
        raise ParamError(
            "runtime",
            "keras cannot run on the emr and ec2 nodes: they have no TensorFlow or Keras "
            "and run the model `make stage-weights` converted, on LiteRT (runtime auto or "
            "litert; docs/performance.md has VGG16's figures)",
        )


def check_weights_readable(
    weights: str, model: str, s3_hook: Any, *, staged_in: str | None = None
) -> None:
    """ParamError('weights') unless the weights file exists: in S3, on disk, or for
    ``imagenet`` in Keras' cache (the local backend) or, with ``staged_in`` (the bucket
    of a remote backend, whose nodes never see the worker's cache), staged there."""
    if weights == "random":
        return
    if weights == "imagenet" and staged_in:
        _check_staged(model, staged_in, s3_hook)
        return
    if weights == "imagenet":
        models = jobs_module("fruits_spark.inference.models")
        try:
            models.imagenet_weights_path(model)
        except models.WeightsUnavailable as exc:
            raise ParamError("weights", str(exc)) from None
        return
    if weights.startswith("s3://"):
        bucket, key = split_uri(weights)
        try:
            found = s3_hook.head_object(key=key, bucket_name=bucket) is not None
        except Exception as exc:  # 403, no such bucket, bad endpoint: all "cannot read"
            raise ParamError("weights", f"cannot read {weights}: {exc}") from None
        if not found:
            raise ParamError("weights", f"cannot read {weights}: no such object")
        return
    if not Path(weights).is_file():
        raise ParamError("weights", f"cannot read {weights}: no such file on the Airflow worker")


def _check_staged(model: str, bucket: str, s3_hook: Any) -> None:
    """The staged ImageNet file of ``model`` is in ``bucket``; else say how to stage it."""
    from fruits.storage.weights import weights_key, weights_uri

    uri = weights_uri(bucket, model)
    try:
        found = s3_hook.head_object(key=weights_key(model), bucket_name=bucket) is not None
    except Exception as exc:  # 403, bad endpoint: staging would not help
        raise ParamError(
            "weights", f"cannot read the staged imagenet weights {uri}: {exc}"
        ) from None
    if not found:
        raise ParamError(
            "weights",
            f"imagenet weights for {model} are not staged at {uri} (cloud nodes read them "
            f"from there, never from the Airflow worker). Stage them once, from a machine "
            f"whose Keras cache holds them: `make stage-weights FRUITS_BUCKET={bucket}` "
            f"(or `python -m fruits.dev.stage_weights --bucket {bucket} --models {model}`)",
        )
