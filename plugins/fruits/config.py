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
FRUITS_POKE_INTERVAL               ``60`` seconds between two looks at the steps' state
FRUITS_STEP_TIMEOUT_BASE           ``1800`` seconds allowed for cluster start and set-up
FRUITS_STEP_SECONDS_PER_IMAGE      ``0.5`` seconds per image added to that allowance
FRUITS_STALL_MINUTES               ``15``: a running step whose progress (images done,
                                   reduce's pass) has not moved for this long fails the
                                   run at once (``0``: only the timeout ends a stuck step)
FRUITS_PROGRESS_SECONDS            ``15``: how often the jobs write their progress.json
FRUITS_LOCAL_CORES                 all cores: the local Spark worker's ``--cores``
FRUITS_LOCAL_MEMORY                ``2g``: the local Spark worker's ``--memory``
FRUITS_EMR_RELEASE_LABEL           ``emr-7.13.0`` (Spark 3.5)
FRUITS_EMR_MASTER_TYPE             ``m5.xlarge``
FRUITS_EMR_CORE_TYPE               ``m5.xlarge``
FRUITS_EMR_CORE_COUNT              ``2``
FRUITS_EMR_TASK_TYPE               ``m5.xlarge``
FRUITS_EMR_TASK_SPOT_COUNT         ``0``: number of spot task nodes (0 = none)
FRUITS_EMR_INSTANCE_PROFILE        ``fruits-emr-instance-role`` (the nodes' instance
                                   profile, as infra/fruits-pipeline.yaml names it)
FRUITS_EMR_SERVICE_ROLE            ``fruits-emr-service-role`` (ditto)
FRUITS_EMR_LOG_URI                 ``s3://<bucket>/logs/emr/``
FRUITS_EMR_SUBNET                  empty: EMR's default; set a private subnet id to run
                                   without public IPs (it needs a NAT or VPC endpoints)
FRUITS_EMR_IDLE_TIMEOUT            ``3600`` seconds: EMR ends an idle cluster by itself
FRUITS_EMR_PYTHON                  ``/usr/bin/python3.11``: installed by the bootstrap
FRUITS_EMR_LOG_WAIT                ``300`` seconds to wait for a failed step's stderr
                                   to reach the LogUri (EMR pushes logs every few minutes)
FRUITS_EMR_TAGS                    extra cluster tags, ``key=value,key=value``
FRUITS_EC2_AMI                     Amazon Linux 2023 (x86_64), resolved by EC2 from the
                                   public SSM parameter; set an AMI id (your own AL2023
                                   based image) or another ``resolve:ssm:`` path (arm64
                                   for Graviton types)
FRUITS_EC2_PRIMARY_TYPE            ``m5.xlarge``: the primary (Spark master + driver),
                                   always on-demand
FRUITS_EC2_WORKER_TYPE             ``m5.xlarge``
FRUITS_EC2_WORKER_COUNT            ``2`` workers (at least 1)
FRUITS_EC2_WORKER_SPOT             ``false``: ``true`` runs the workers (only) as spot
FRUITS_EC2_SUBNET                  empty: the default VPC's; set a private subnet (NAT or
                                   VPC endpoints for S3 and SSM)
FRUITS_EC2_SECURITY_GROUP          empty: the VPC's default group; set the cluster group
                                   of infra/fruits-pipeline.yaml (ingress from itself only)
FRUITS_EC2_INSTANCE_PROFILE        ``fruits-ec2-node-role`` (infra/fruits-pipeline.yaml)
FRUITS_EC2_LOG_URI                 ``s3://<bucket>/logs/ec2/``: state files, step logs
FRUITS_EC2_READY_TIMEOUT           ``1200`` seconds for the nodes to install and join
FRUITS_EC2_VOLUME_GB               ``30``: each node's encrypted gp3 root volume
FRUITS_EC2_PYTHON                  ``python3.11`` (the nodes' interpreter, from dnf)
FRUITS_EC2_TAGS                    extra instance tags, ``key=value,key=value``
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


class ConfigError(ValueError):
    """A FRUITS_* variable has a value the pipeline cannot use."""


def _path(value: str) -> Path:
    """Relative paths are relative to the project root, not to whatever the cwd is."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p


def _jobs_dir(env: Mapping[str, str]) -> Path:
    return _path(env.get("FRUITS_JOBS_DIR", "").strip() or "spark_jobs")


limits = jobs_module("fruits_spark.limits")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value}: must be >= {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number") from None
    if value < 0:
        raise ConfigError(f"{name}={value}: must be >= 0")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def _tags(raw: str, name: str = "FRUITS_EMR_TAGS") -> dict[str, str]:
    tags = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{name}: {item!r} is not key=value")
        tags[key.strip()] = value.strip()
    return tags


@dataclass(frozen=True)
class EmrSettings:
    release_label: str = "emr-7.13.0"
    master_type: str = "m5.xlarge"
    core_type: str = "m5.xlarge"
    core_count: int = 2
    task_type: str = "m5.xlarge"
    task_spot_count: int = 0
    instance_profile: str = "fruits-emr-instance-role"
    service_role: str = "fruits-emr-service-role"
    log_uri: str = ""
    subnet: str = ""
    idle_timeout: int = 3600
    python: str = "/usr/bin/python3.11"
    log_wait: int = 300
    tags: dict[str, str] = field(default_factory=dict)


AL2023_X86_64 = "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


@dataclass(frozen=True)
class Ec2Settings:
    ami: str = AL2023_X86_64
    primary_type: str = "m5.xlarge"
    worker_type: str = "m5.xlarge"
    worker_count: int = 2
    worker_spot: bool = False
    subnet: str = ""
    security_group: str = ""
    instance_profile: str = "fruits-ec2-node-role"
    log_uri: str = ""
    ready_timeout: int = 1200
    volume_gb: int = 30
    python: str = "python3.11"
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    compute: str = "local"
    bucket: str = "fruits-pipeline"
    incoming: Path = PROJECT_ROOT / "data" / "incoming"
    scratch: Path = PROJECT_ROOT / "var" / "scratch"
    jobs_dir: Path = PROJECT_ROOT / "spark_jobs"
    aws_conn_id: str = "aws_default"
    model: str = "mobilenetv2"
    runtime: str = "litert"
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
    variance = _float(env, "FRUITS_VARIANCE", limits.VARIANCE_DEFAULT)
    if error := limits.variance_error(variance):
        raise ConfigError(f"FRUITS_VARIANCE {error}")
    image_size = _int(env, "FRUITS_IMAGE_SIZE", limits.IMAGE_SIZE_DEFAULT)
    if error := limits.image_size_error(image_size):
        raise ConfigError(f"FRUITS_IMAGE_SIZE {error}")
    emr = EmrSettings(
        release_label=env.get("FRUITS_EMR_RELEASE_LABEL", "") or EmrSettings.release_label,
        master_type=env.get("FRUITS_EMR_MASTER_TYPE", "") or EmrSettings.master_type,
        core_type=env.get("FRUITS_EMR_CORE_TYPE", "") or EmrSettings.core_type,
        core_count=_int(env, "FRUITS_EMR_CORE_COUNT", EmrSettings.core_count),
        task_type=env.get("FRUITS_EMR_TASK_TYPE", "") or EmrSettings.task_type,
        task_spot_count=_int(env, "FRUITS_EMR_TASK_SPOT_COUNT", 0),
        instance_profile=env.get("FRUITS_EMR_INSTANCE_PROFILE", "") or EmrSettings.instance_profile,
        service_role=env.get("FRUITS_EMR_SERVICE_ROLE", "") or EmrSettings.service_role,
        log_uri=env.get("FRUITS_EMR_LOG_URI", "") or f"s3://{bucket}/logs/emr/",
        subnet=env.get("FRUITS_EMR_SUBNET", "").strip(),
        idle_timeout=_int(env, "FRUITS_EMR_IDLE_TIMEOUT", EmrSettings.idle_timeout, minimum=60),
        python=env.get("FRUITS_EMR_PYTHON", "") or EmrSettings.python,
        log_wait=_int(env, "FRUITS_EMR_LOG_WAIT", EmrSettings.log_wait),
        tags=_tags(env.get("FRUITS_EMR_TAGS", "")),
    )
    ec2 = Ec2Settings(
        ami=env.get("FRUITS_EC2_AMI", "").strip() or Ec2Settings.ami,
        primary_type=env.get("FRUITS_EC2_PRIMARY_TYPE", "").strip() or Ec2Settings.primary_type,
        worker_type=env.get("FRUITS_EC2_WORKER_TYPE", "").strip() or Ec2Settings.worker_type,
        worker_count=_int(env, "FRUITS_EC2_WORKER_COUNT", Ec2Settings.worker_count, minimum=1),
        worker_spot=_bool(env, "FRUITS_EC2_WORKER_SPOT", False),
        subnet=env.get("FRUITS_EC2_SUBNET", "").strip(),
        security_group=env.get("FRUITS_EC2_SECURITY_GROUP", "").strip(),
        instance_profile=env.get("FRUITS_EC2_INSTANCE_PROFILE", "").strip()
        or Ec2Settings.instance_profile,
        log_uri=env.get("FRUITS_EC2_LOG_URI", "").strip() or f"s3://{bucket}/logs/ec2/",
        ready_timeout=_int(env, "FRUITS_EC2_READY_TIMEOUT", Ec2Settings.ready_timeout, minimum=10),
        volume_gb=_int(env, "FRUITS_EC2_VOLUME_GB", Ec2Settings.volume_gb, minimum=8),
        python=env.get("FRUITS_EC2_PYTHON", "").strip() or Ec2Settings.python,
        tags=_tags(env.get("FRUITS_EC2_TAGS", ""), "FRUITS_EC2_TAGS"),
    )
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
        poke_interval=_int(env, "FRUITS_POKE_INTERVAL", 60, minimum=1),
        step_timeout_base=_int(env, "FRUITS_STEP_TIMEOUT_BASE", 1800),
        step_seconds_per_image=_float(env, "FRUITS_STEP_SECONDS_PER_IMAGE", 0.5),
        stall_minutes=_int(env, "FRUITS_STALL_MINUTES", 15),
        progress_seconds=_int(env, "FRUITS_PROGRESS_SECONDS", 15, minimum=1),
        local_cores=_int(env, "FRUITS_LOCAL_CORES", os.cpu_count() or 1, minimum=1),
        local_memory=env.get("FRUITS_LOCAL_MEMORY", "").strip() or "2g",
        emr=emr,
        ec2=ec2,
    )
