"""Every setting of the pipeline, read from the environment (documented defaults below).

The DAG reads these when it is parsed (``FRUITS_COMPUTE`` picks the cluster backend);
tasks read them again when they run. Nothing here touches the network.

=================================  ====================================================
variable                           default / meaning
=================================  ====================================================
FRUITS_COMPUTE                     ``local`` (Spark standalone cluster on the Airflow
                                   worker), ``emr`` (Amazon EMR) or ``ec2`` (Spark
                                   standalone on EC2 instances the pipeline manages)
FRUITS_BUCKET                      ``fruits-pipeline``: raw/, code/, runs/, logs/ live here
FRUITS_INCOMING                    ``data/incoming``: batches, ``<YYYY-MM-DD>/<label>/<file>``
FRUITS_SCRATCH                     ``var/scratch``: local clusters' work, staging, logs
FRUITS_JOBS_DIR                    ``spark_jobs``: featurize.py, reduce.py, fruits_spark/
FRUITS_AWS_CONN_ID                 ``aws_default`` (region and endpoint come from it)
FRUITS_MODEL                       ``mobilenetv2`` (trigger-form default; ``mobilenet``
                                   or ``vgg16``)
FRUITS_WEIGHTS                     ``imagenet`` (trigger-form default; ``random`` for demos)
FRUITS_IMAGE_SIZE                  ``224`` (trigger-form default)
FRUITS_VARIANCE                    ``0.95`` (trigger-form default)
FRUITS_RUNTIME                     ``litert`` (trigger-form default): what runs the CNN,
                                   ``litert`` (converted once, fastest) or ``keras``
FRUITS_MODEL_CACHE                 ``~/.cache/fruits-pipeline/models``: the Spark driver's
                                   converted models (``off``: convert every run)
FRUITS_JVM_ARCHIVE                 ``~/.cache/fruits-pipeline/jvm/spark-<key>.jsa``: the
                                   Spark JVMs' class archive (``off``: none;
                                   :mod:`fruits.jvm_archive`)
FRUITS_JVM_JIT                     ``c1``: drivers and the local cluster's daemons compile
                                   with C1 only; ``tiered``: Java's default
                                   (:mod:`fruits.sparkenv`; executors always tiered)
FRUITS_POKE_INTERVAL               ``60`` seconds between two looks at the steps' state
                                   (from 60 s up the sensors reschedule, below it they poke)
FRUITS_STEP_TIMEOUT_BASE           ``1800`` seconds allowed for cluster start and set-up
FRUITS_STEP_SECONDS_PER_IMAGE      ``0.5`` seconds per image added to that allowance
FRUITS_STALL_MINUTES               ``15``: a running step whose progress (images done,
                                   reduce's pass) has not moved for this long fails the
                                   run at once (``0``: only the timeout ends a stuck step)
FRUITS_PROGRESS_SECONDS            ``15``: how often the jobs write their progress.json
FRUITS_LOCAL_CORES                 all cores: the local Spark worker's ``--cores``
FRUITS_LOCAL_MEMORY                ``2g``: the local Spark worker's ``--memory``
FRUITS_EMR_*, FRUITS_EC2_*         the emr and ec2 backends' clusters: :mod:`fruits.cloud_settings`
=================================  ====================================================
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from fruits.cloud_settings import Ec2Settings, EmrSettings, ec2_settings, emr_settings
from fruits.env_values import ConfigError, env_float, env_int

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EMR_DIR = Path(__file__).resolve().parent / "emr"

COMPUTE_BACKENDS = ("local", "emr", "ec2")


def jobs_module(name: str, jobs_dir: Path | None = None) -> ModuleType:
    """A ``fruits_spark`` module, from the jobs' folder if it is not importable already.

    The rules the plugins share with the Spark jobs (the model registry, the bounds of
    the run's numbers) live in the jobs' package, which ships alone to the clusters; the
    plugins import it from there rather than keep copies.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        folder = str(jobs_dir or _jobs_dir(os.environ))
        if folder not in sys.path:
            sys.path.append(folder)
        return importlib.import_module(name)


def model_names() -> tuple[str, ...]:
    """The models the jobs can run: the keys of ``fruits_spark.models.MODELS``."""
    return tuple(jobs_module("fruits_spark.models").MODELS)


def runtime_names() -> tuple[str, ...]:
    """What can run the CNN: ``fruits_spark.runtimes.RUNTIMES``, the default first."""
    return tuple(jobs_module("fruits_spark.runtimes").RUNTIMES)


def _path(value: str) -> Path:
    """Relative paths are relative to the project root, not to whatever the cwd is."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p


def _jobs_dir(env: Mapping[str, str]) -> Path:
    return _path(env.get("FRUITS_JOBS_DIR", "").strip() or "spark_jobs")


limits = jobs_module("fruits_spark.limits")


RESCHEDULE_FROM_S = 60  # the shortest poke interval at which sensors reschedule


@dataclass(frozen=True)
class Settings:
    compute: str = "local"
    bucket: str = "fruits-pipeline"
    incoming: Path = PROJECT_ROOT / "data" / "incoming"
    scratch: Path = PROJECT_ROOT / "var" / "scratch"
    jobs_dir: Path = PROJECT_ROOT / "spark_jobs"
    aws_conn_id: str = "aws_default"
    model: str = "mobilenetv2"
    runtime: str = "auto"
    weights: str = "imagenet"
    image_size: int = limits.IMAGE_SIZE_DEFAULT
    variance: float = limits.VARIANCE_DEFAULT
    poke_interval: int = 60
    step_timeout_base: int = 1800
    step_seconds_per_image: float = 0.5
    stall_minutes: int = 15
    progress_seconds: int = 15
    local_cores: int = os.cpu_count() or 1
    local_memory: str = "2g"
    emr: EmrSettings = field(default_factory=EmrSettings)
    ec2: Ec2Settings = field(default_factory=Ec2Settings)

    @property
    def sensor_mode(self) -> str:
        """``reschedule`` (no worker slot held between looks) when the looks are a minute
        or more apart, as Airflow advises; ``poke`` for the quick looks of ``make demo``,
        ``make ui`` and the tests. A rescheduled sensor poked every few seconds on a busy
        host loses to a scheduler race: an executor event from one look, handled after
        the next look was queued, fails the sensor (apache/airflow#71172)."""
        return "reschedule" if self.poke_interval >= RESCHEDULE_FROM_S else "poke"

    def step_timeout(self, n_images: int) -> int:
        """Seconds the steps may take for a batch of ``n_images`` (start-up included)."""
        return int(self.step_timeout_base + self.step_seconds_per_image * max(0, n_images))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings now (not at import), so a re-parsed DAG sees the current values."""
    env = os.environ if env is None else env
    compute = env.get("FRUITS_COMPUTE", "local").strip().lower() or "local"
    if compute not in COMPUTE_BACKENDS:
        choices = ", ".join(COMPUTE_BACKENDS)
        raise ConfigError(f"FRUITS_COMPUTE={compute!r}: choose one of {choices}")
    model = env.get("FRUITS_MODEL", "mobilenetv2").strip() or "mobilenetv2"
    if model not in model_names():
        raise ConfigError(f"FRUITS_MODEL={model!r}: choose one of {', '.join(model_names())}")
    runtime = env.get("FRUITS_RUNTIME", "").strip() or runtime_names()[0]
    if runtime not in runtime_names():
        choices = ", ".join(runtime_names())
        raise ConfigError(f"FRUITS_RUNTIME={runtime!r}: choose one of {choices}")
    bucket = env.get("FRUITS_BUCKET", "fruits-pipeline").strip() or "fruits-pipeline"
    variance = env_float(env, "FRUITS_VARIANCE", limits.VARIANCE_DEFAULT)
    if error := limits.variance_error(variance):
        raise ConfigError(f"FRUITS_VARIANCE {error}")
    image_size = env_int(env, "FRUITS_IMAGE_SIZE", limits.IMAGE_SIZE_DEFAULT)
    if error := limits.image_size_error(image_size):
        raise ConfigError(f"FRUITS_IMAGE_SIZE {error}")
    return Settings(
        compute=compute,
        bucket=bucket,
        incoming=_path(env.get("FRUITS_INCOMING", "") or "data/incoming"),
        scratch=_path(env.get("FRUITS_SCRATCH", "") or "var/scratch"),
        jobs_dir=_jobs_dir(env),
        aws_conn_id=env.get("FRUITS_AWS_CONN_ID", "") or "aws_default",
        model=model,
        runtime=runtime,
        weights=env.get("FRUITS_WEIGHTS", "").strip() or "imagenet",
        image_size=image_size,
        variance=variance,
        poke_interval=env_int(env, "FRUITS_POKE_INTERVAL", 60, minimum=1),
        step_timeout_base=env_int(env, "FRUITS_STEP_TIMEOUT_BASE", 1800),
        step_seconds_per_image=env_float(env, "FRUITS_STEP_SECONDS_PER_IMAGE", 0.5),
        stall_minutes=env_int(env, "FRUITS_STALL_MINUTES", 15),
        progress_seconds=env_int(env, "FRUITS_PROGRESS_SECONDS", 15, minimum=1),
        local_cores=env_int(env, "FRUITS_LOCAL_CORES", os.cpu_count() or 1, minimum=1),
        local_memory=env.get("FRUITS_LOCAL_MEMORY", "").strip() or "2g",
        emr=emr_settings(env, bucket),
        ec2=ec2_settings(env, bucket),
    )
