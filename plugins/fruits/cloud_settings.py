"""The settings of the ``emr`` and ``ec2`` backends' clusters, read from the environment
(the rest: :mod:`fruits.config`, which holds these as ``Settings.emr`` and ``.ec2``).

=================================  ====================================================
variable                           default / meaning
=================================  ====================================================
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

from collections.abc import Mapping
from dataclasses import dataclass, field

from fruits.env_values import env_bool, env_int, env_tags


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


def emr_settings(env: Mapping[str, str], bucket: str) -> EmrSettings:
    return EmrSettings(
        release_label=env.get("FRUITS_EMR_RELEASE_LABEL", "") or EmrSettings.release_label,
        master_type=env.get("FRUITS_EMR_MASTER_TYPE", "") or EmrSettings.master_type,
        core_type=env.get("FRUITS_EMR_CORE_TYPE", "") or EmrSettings.core_type,
        core_count=env_int(env, "FRUITS_EMR_CORE_COUNT", EmrSettings.core_count),
        task_type=env.get("FRUITS_EMR_TASK_TYPE", "") or EmrSettings.task_type,
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
    return Ec2Settings(
        ami=env.get("FRUITS_EC2_AMI", "").strip() or Ec2Settings.ami,
        primary_type=env.get("FRUITS_EC2_PRIMARY_TYPE", "").strip() or Ec2Settings.primary_type,
        worker_type=env.get("FRUITS_EC2_WORKER_TYPE", "").strip() or Ec2Settings.worker_type,
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
        tags=env_tags(env.get("FRUITS_EC2_TAGS", ""), "FRUITS_EC2_TAGS"),
    )
