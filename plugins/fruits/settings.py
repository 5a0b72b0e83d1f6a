"""Every setting of the pipeline, read from the environment, in one place.

``docs/configuration.md`` lists every ``FRUITS_*`` variable with its default and meaning;
``tests/plugins/fruits/test_settings.py`` keeps that page equal to what the code reads.
The DAG reads these when it is parsed (``FRUITS_COMPUTE`` picks the cluster backend);
tasks read them again when they run. Nothing here touches the network.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from fruits.env_values import ConfigError, env_bool, env_float, env_int, env_jvm_mib, env_tags

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# In a bundle (``make dist``: MWAA's plugins.zip, the image's plugins folder) the jobs'
# folder and constraints.txt sit beside the ``fruits`` package, not two levels up.
PLUGINS_ROOT = Path(__file__).resolve().parents[1]

COMPUTE_BACKENDS = ("local", "emr", "ec2", "serverless")
# Spark refuses a driver whose heap is under 1.5 x its 300 MB reserve ("Insufficient
# driver memory", UnifiedMemoryManager)
SPARK_MIN_DRIVER_MIB = 450


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
    """The models the jobs can run: the keys of ``fruits_spark.rules.MODELS``."""
    return tuple(rules.MODELS)


def runtime_names() -> tuple[str, ...]:
    """What can run the CNN: ``fruits_spark.rules.RUNTIMES``, the default first."""
    return tuple(rules.RUNTIMES)


def precision_names() -> tuple[str, ...]:
    """What the features can be computed in: ``fruits_spark.rules.PRECISIONS``, the
    default (fp32) first."""
    return tuple(rules.PRECISIONS)


def _path(value: str) -> Path:
    """Relative paths are relative to the project root, not to whatever the cwd is."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p


def _jobs_dir(env: Mapping[str, str]) -> Path:
    if value := env.get("FRUITS_JOBS_DIR", "").strip():
        return _path(value)
    bundled = PLUGINS_ROOT / "spark_jobs"
    return bundled if bundled.is_dir() else PROJECT_ROOT / "spark_jobs"


def constraints_file(jobs_dir: Path) -> Path:
    """The project's pins (``constraints.txt``), beside the jobs' folder in the repository
    and in a bundle: the versions the ec2 nodes install come from here, not from what
    the Airflow worker happens to have installed."""
    return jobs_dir.parent / "constraints.txt"


def _incoming(value: str) -> str:
    """A folder (made absolute) or an ``s3://bucket/prefix`` (kept, without a trailing /)."""
    value = value.strip()
    if value.startswith("s3://"):
        bucket = value[len("s3://") :].split("/", 1)[0]
        if not bucket:
            raise ConfigError(f"FRUITS_INCOMING={value!r}: expected s3://bucket/prefix")
        return value.rstrip("/")
    return str(_path(value or "data/incoming"))


# the one module of the jobs' package the DAG loads when parsed: dependency-free
rules = jobs_module("fruits_spark.rules")


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
    arch: str = "x86_64"  # FRUITS_EMR_ARCH: x86_64 (m5) or arm64 (Graviton, m7g)


AL2023_X86_64 = "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
# the nodes' architecture (FRUITS_EMR_ARCH, FRUITS_EC2_ARCH): instance family, AMI, wheels
ARCHES = ("x86_64", "arm64")
ARCH_INSTANCE_TYPE = {"x86_64": "m5.xlarge", "arm64": "m7g.xlarge"}  # 4 vCPU, 16 GiB each
AL2023_AMI = {"x86_64": AL2023_X86_64, "arm64": AL2023_X86_64.replace("x86_64", "arm64")}


def node_arch(env: Mapping[str, str], setting: str) -> str:
    arch = env.get(setting, "").strip() or "x86_64"
    if arch not in ARCHES:
        raise ConfigError(f"{setting}={arch!r}: choose one of {', '.join(ARCHES)}")
    return arch


def instance_arch(instance_type: str) -> str:
    """The architecture of an instance type: Graviton families carry a ``g`` after their
    generation (m7g, c7gn, r8gd, t4g); the rest run x86_64."""
    family = instance_type.split(".", 1)[0]
    return "arm64" if re.fullmatch(r"[a-z]+\d+g[a-z]*(?:-flex)?", family) else "x86_64"


def arch_types(
    env: Mapping[str, str], arch: str, setting: str, names: tuple[str, ...]
) -> list[str]:
    """The instance types ``names`` (settings) give, each defaulting to ``arch``'s family;
    a type of the other architecture fails now, not as a node that cannot boot."""
    types = [env.get(name, "").strip() or ARCH_INSTANCE_TYPE[arch] for name in names]
    for name, kind in zip(names, types, strict=True):
        if instance_arch(kind) != arch:
            raise ConfigError(f"{name}={kind} is not an {arch} instance type ({setting}={arch})")
    return types


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
    # the hadoop-aws the nodes fetch must match the Hadoop inside the pinned pyspark
    hadoop_version: str = "3.5.0"
    tags: dict[str, str] = field(default_factory=dict)
    arch: str = "x86_64"  # FRUITS_EC2_ARCH: x86_64 (m5) or arm64 (Graviton, m7g)
    jars_uri: str = ""  # FRUITS_EC2_JARS_URI: s3:// folder of hadoop-aws + SDK jars, else Maven


def emr_settings(env: Mapping[str, str], bucket: str) -> EmrSettings:
    arch = node_arch(env, "FRUITS_EMR_ARCH")
    names = ("FRUITS_EMR_MASTER_TYPE", "FRUITS_EMR_CORE_TYPE", "FRUITS_EMR_TASK_TYPE")
    master_type, core_type, task_type = arch_types(env, arch, "FRUITS_EMR_ARCH", names)
    return EmrSettings(
        arch=arch,
        release_label=env.get("FRUITS_EMR_RELEASE_LABEL", "") or EmrSettings.release_label,
        master_type=master_type,
        core_type=core_type,
        core_count=env_int(env, "FRUITS_EMR_CORE_COUNT", EmrSettings.core_count),
        task_type=task_type,
        task_spot_count=env_int(env, "FRUITS_EMR_TASK_SPOT_COUNT", 0),
        instance_profile=env.get("FRUITS_EMR_INSTANCE_PROFILE", "") or EmrSettings.instance_profile,
        service_role=env.get("FRUITS_EMR_SERVICE_ROLE", "") or EmrSettings.service_role,
        log_uri=env.get("FRUITS_EMR_LOG_URI", "") or f"s3://{bucket}/logs/emr/",
        subnet=env.get("FRUITS_EMR_SUBNET", "").strip(),
        idle_timeout=env_int(env, "FRUITS_EMR_IDLE_TIMEOUT", EmrSettings.idle_timeout, minimum=60),
        python=env.get("FRUITS_EMR_PYTHON", "") or EmrSettings.python,
        log_wait=env_int(env, "FRUITS_EMR_LOG_WAIT", EmrSettings.log_wait),
        tags=env_tags(env.get("FRUITS_EMR_TAGS", "")),
    )


def ec2_settings(env: Mapping[str, str], bucket: str) -> Ec2Settings:
    arch = node_arch(env, "FRUITS_EC2_ARCH")
    names = ("FRUITS_EC2_PRIMARY_TYPE", "FRUITS_EC2_WORKER_TYPE")
    primary_type, worker_type = arch_types(env, arch, "FRUITS_EC2_ARCH", names)
    jars_uri = env.get("FRUITS_EC2_JARS_URI", "").strip()
    if jars_uri and not jars_uri.startswith("s3://"):
        raise ConfigError(f"FRUITS_EC2_JARS_URI={jars_uri!r}: an s3://bucket/folder/")
    return Ec2Settings(
        arch=arch,
        jars_uri=jars_uri.rstrip("/") + "/" if jars_uri else "",
        ami=env.get("FRUITS_EC2_AMI", "").strip() or AL2023_AMI[arch],
        primary_type=primary_type,
        worker_type=worker_type,
        worker_count=env_int(env, "FRUITS_EC2_WORKER_COUNT", Ec2Settings.worker_count, minimum=1),
        worker_spot=env_bool(env, "FRUITS_EC2_WORKER_SPOT", False),
        subnet=env.get("FRUITS_EC2_SUBNET", "").strip(),
        security_group=env.get("FRUITS_EC2_SECURITY_GROUP", "").strip(),
        instance_profile=env.get("FRUITS_EC2_INSTANCE_PROFILE", "").strip()
        or Ec2Settings.instance_profile,
        log_uri=env.get("FRUITS_EC2_LOG_URI", "").strip() or f"s3://{bucket}/logs/ec2/",
        ready_timeout=env_int(
            env, "FRUITS_EC2_READY_TIMEOUT", Ec2Settings.ready_timeout, minimum=10
        ),
        volume_gb=env_int(env, "FRUITS_EC2_VOLUME_GB", Ec2Settings.volume_gb, minimum=8),
        python=env.get("FRUITS_EC2_PYTHON", "").strip() or Ec2Settings.python,
        hadoop_version=env.get("FRUITS_EC2_HADOOP_VERSION", "").strip()
        or Ec2Settings.hadoop_version,
        tags=env_tags(env.get("FRUITS_EC2_TAGS", ""), "FRUITS_EC2_TAGS"),
    )


# EMR Serverless: a worker's vCPUs (one executor each, as many cores as the other
# backends' executors at most) -> the memory (GB) a worker of that size may have
SERVERLESS_ARCHES = ("X86_64", "ARM64")
SERVERLESS_WORKER_MEMORY_GB = {1: (2, 8), 2: (4, 16), 4: (8, 30)}


@dataclass(frozen=True)
class ServerlessSettings:
    application_id: str = ""  # a named application, reused and left running; empty: one per run
    archive: str = ""  # s3:// of the Python archive; empty: beside the staged wheels
    image: str = ""  # a custom image (ECR URI) instead of the archive
    arch: str = "X86_64"
    release_label: str = EmrSettings.release_label
    execution_role: str = "fruits-serverless-job-role"
    max_vcpus: int = 32
    max_memory_gb: int = 128
    worker_vcpus: int = 4
    worker_memory_gb: int = 16
    idle_minutes: int = 15
    log_uri: str = ""
    log_wait: int = 300
    tags: dict[str, str] = field(default_factory=dict)


def serverless_settings(env: Mapping[str, str], bucket: str) -> ServerlessSettings:
    """``FRUITS_SERVERLESS_*``; a bad choice fails now, not as a refused application."""
    arch = env.get("FRUITS_SERVERLESS_ARCH", "").strip().upper() or ServerlessSettings.arch
    if arch not in SERVERLESS_ARCHES:
        raise ConfigError(f"FRUITS_SERVERLESS_ARCH={arch!r}: choose X86_64 or ARM64")
    label = env.get("FRUITS_SERVERLESS_RELEASE_LABEL", "").strip() or EmrSettings.release_label
    if not label.startswith("emr-7."):
        raise ConfigError(
            f"FRUITS_SERVERLESS_RELEASE_LABEL={label!r}: an emr-7.x release (Spark 3.5)"
        )
    archive = env.get("FRUITS_SERVERLESS_ARCHIVE", "").strip()
    image = env.get("FRUITS_SERVERLESS_IMAGE", "").strip()
    if archive and image:
        raise ConfigError(
            "FRUITS_SERVERLESS_ARCHIVE and FRUITS_SERVERLESS_IMAGE: set one, not both"
        )
    if archive and not archive.startswith("s3://"):
        raise ConfigError(f"FRUITS_SERVERLESS_ARCHIVE={archive!r}: an s3:// URI of a .tar.gz")
    vcpus = env_int(env, "FRUITS_SERVERLESS_WORKER_VCPUS", ServerlessSettings.worker_vcpus)
    if vcpus not in SERVERLESS_WORKER_MEMORY_GB:
        raise ConfigError(f"FRUITS_SERVERLESS_WORKER_VCPUS={vcpus}: 1, 2 or 4")
    memory = env_int(env, "FRUITS_SERVERLESS_WORKER_MEMORY_GB", 4 * vcpus)
    low, high = SERVERLESS_WORKER_MEMORY_GB[vcpus]
    if not low <= memory <= high:
        raise ConfigError(
            f"FRUITS_SERVERLESS_WORKER_MEMORY_GB={memory}: a {vcpus}-vCPU worker has {low} to "
            f"{high} GB"
        )
    max_vcpus = env_int(env, "FRUITS_SERVERLESS_MAX_VCPUS", ServerlessSettings.max_vcpus)
    max_memory = env_int(env, "FRUITS_SERVERLESS_MAX_MEMORY_GB", ServerlessSettings.max_memory_gb)
    if max_vcpus < 2 * vcpus or max_memory < 2 * memory:
        raise ConfigError(
            f"FRUITS_SERVERLESS_MAX_VCPUS={max_vcpus}, FRUITS_SERVERLESS_MAX_MEMORY_GB="
            f"{max_memory}: room for the driver and one executor ({2 * vcpus} vCPU, "
            f"{2 * memory} GB) at least"
        )
    return ServerlessSettings(
        application_id=env.get("FRUITS_SERVERLESS_APPLICATION_ID", "").strip(),
        archive=archive,
        image=image,
        arch=arch,
        release_label=label,
        execution_role=env.get("FRUITS_SERVERLESS_EXECUTION_ROLE", "").strip()
        or ServerlessSettings.execution_role,
        max_vcpus=max_vcpus,
        max_memory_gb=max_memory,
        worker_vcpus=vcpus,
        worker_memory_gb=memory,
        idle_minutes=env_int(
            env, "FRUITS_SERVERLESS_IDLE_MINUTES", ServerlessSettings.idle_minutes, minimum=1
        ),
        log_uri=env.get("FRUITS_SERVERLESS_LOG_URI", "").strip()
        or f"s3://{bucket}/logs/serverless/",
        log_wait=env_int(env, "FRUITS_SERVERLESS_LOG_WAIT", ServerlessSettings.log_wait),
        tags=env_tags(env.get("FRUITS_SERVERLESS_TAGS", ""), "FRUITS_SERVERLESS_TAGS"),
    )


RESCHEDULE_FROM_S = 60  # the shortest poke interval at which sensors reschedule


@dataclass(frozen=True)
class Settings:
    compute: str = "local"
    bucket: str = "fruits-pipeline"
    incoming: str = str(PROJECT_ROOT / "data" / "incoming")  # a folder or s3://bucket/prefix
    scratch: Path = PROJECT_ROOT / "var" / "scratch"
    jobs_dir: Path = PROJECT_ROOT / "spark_jobs"
    aws_conn_id: str = "aws_default"
    source_conn_id: str = "aws_default"  # who lists and reads an s3:// FRUITS_INCOMING
    pack_batches: bool = True  # a folder batch goes to S3 as Parquet shards, not file by file
    model: str = "mobilenetv2"
    runtime: str = "auto"
    precision: str = "fp32"  # or int8: mobilenet only, measured (docs/precision.md)
    weights: str = "imagenet"
    image_size: int = rules.IMAGE_SIZE_DEFAULT
    variance: float = rules.VARIANCE_DEFAULT
    poke_interval: int = 60
    step_timeout_base: int = 1800
    step_seconds_per_image: float = 0.5
    stall_minutes: int = 15
    progress_seconds: int = 15
    local_cores: int = os.cpu_count() or 1
    local_memory: str = "2g"
    # The steps' largest driver heap (spark.driver.memory; Spark's own default). How much of
    # it a driver touches is set by its collector's options (fruits.clusters.local.steps:
    # DRIVER_JAVA_OPTIONS); a fixed 512m heap (-Xms = -Xmx) measured worse at 90k images.
    local_driver_memory: str = "1g"
    emr: EmrSettings = field(default_factory=EmrSettings)
    ec2: Ec2Settings = field(default_factory=Ec2Settings)
    serverless: ServerlessSettings = field(default_factory=ServerlessSettings)

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
    precision = env.get("FRUITS_PRECISION", "").strip().lower() or rules.DEFAULT_PRECISION
    if error := rules.precision_error(precision, model, runtime):
        raise ConfigError(f"FRUITS_PRECISION={precision!r}: {error}")
    bucket = env.get("FRUITS_BUCKET", "fruits-pipeline").strip() or "fruits-pipeline"
    variance = env_float(env, "FRUITS_VARIANCE", rules.VARIANCE_DEFAULT)
    if error := rules.variance_error(variance):
        raise ConfigError(f"FRUITS_VARIANCE {error}")
    image_size = env_int(env, "FRUITS_IMAGE_SIZE", rules.IMAGE_SIZE_DEFAULT)
    if error := rules.image_size_error(image_size):
        raise ConfigError(f"FRUITS_IMAGE_SIZE {error}")
    aws_conn_id = env.get("FRUITS_AWS_CONN_ID", "").strip() or "aws_default"
    return Settings(
        compute=compute,
        bucket=bucket,
        incoming=_incoming(env.get("FRUITS_INCOMING", "")),
        scratch=_path(env.get("FRUITS_SCRATCH", "") or "var/scratch"),
        jobs_dir=_jobs_dir(env),
        aws_conn_id=aws_conn_id,
        source_conn_id=env.get("FRUITS_SOURCE_CONN_ID", "").strip() or aws_conn_id,
        pack_batches=env_bool(env, "FRUITS_PACK_BATCHES", True),
        model=model,
        runtime=runtime,
        precision=precision,
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
        local_driver_memory=env_jvm_mib(
            env, "FRUITS_LOCAL_DRIVER_MEMORY", "1g", minimum_mib=SPARK_MIN_DRIVER_MIB
        ),
        emr=emr_settings(env, bucket),
        ec2=ec2_settings(env, bucket),
        serverless=serverless_settings(env, bucket),
    )
