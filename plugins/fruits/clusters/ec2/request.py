"""What an ``ec2`` cluster is launched with: one ``run_instances`` request per role and
the values of the nodes' user data, computed by ``plan_run`` (JSON, no AWS call).

Locked down as the provider's EC2 system test launches: IMDSv2 only, encrypted volumes
deleted with the instance, ``InstanceInitiatedShutdownBehavior=terminate`` (the user
data's shutdown timer then ends a node Airflow forgot), tags on every resource.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fruits.clusters.ec2.attempt import ATTEMPT_TAG
from fruits.clusters.ec2.instances import BUCKET_TAG, CLUSTER_TAG, PROJECT_TAG, ROLE_TAG
from fruits.settings import Settings
from fruits.storage.wheels import node_wheels


def instance_config(
    settings: Settings, *, role: str, instance_type: str, spot: bool, tags: Mapping[str, str]
) -> dict[str, Any]:
    """One role's ``run_instances`` request (without ImageId, counts and user data)."""
    ec2 = settings.ec2
    tag_list = [{"Key": k, "Value": v} for k, v in {**tags, ROLE_TAG: role}.items()]
    config: dict[str, Any] = {
        "InstanceType": instance_type,
        "IamInstanceProfile": {"Name": ec2.instance_profile},
        "MetadataOptions": {
            "HttpTokens": "required",  # IMDSv2 only
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": 1,
        },
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/xvda",  # Amazon Linux 2023's root device
                "Ebs": {
                    "VolumeSize": ec2.volume_gb,
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            }
        ],
        "InstanceInitiatedShutdownBehavior": "terminate",  # the user data's timer ends it
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": tag_list}
            for kind in ("instance", "volume", "network-interface")
        ],
    }
    if ec2.subnet:
        config["SubnetId"] = ec2.subnet
    if ec2.security_group:
        config["SecurityGroupIds"] = [ec2.security_group]
    if spot:
        config["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            },
        }
    return config


def cluster_request(
    settings: Settings, *, name: str, code: Mapping[str, str], run_key: str, timeout: int
) -> dict[str, Any]:
    """What ``create_job_flow`` launches: both roles' requests and the user data values
    (rendered at launch: the workers' needs the primary's address)."""
    ec2 = settings.ec2
    cluster_id = f"ec2-{run_key}"
    log_prefix = f"{ec2.log_uri.rstrip('/')}/{cluster_id}/"
    tags = {**ec2.tags, PROJECT_TAG["Key"]: PROJECT_TAG["Value"], CLUSTER_TAG: cluster_id,
            BUCKET_TAG: settings.bucket, "Name": name[:255]}  # fmt: skip
    # the dead-man switch: longer than start-up and the steps' own timeout together
    lifetime = math.ceil((ec2.ready_timeout + timeout) / 60) + 30
    return {
        "Name": name,
        "cluster_id": cluster_id,
        "log_prefix": log_prefix,
        # FRUITS_EC2_ARCH picked both: AL2023 of that arch, m5 or m7g (settings.ec2_settings)
        "image_id": ec2.ami,
        "worker_count": ec2.worker_count,
        "ready_timeout": ec2.ready_timeout,
        "primary": instance_config(
            settings, role="primary", instance_type=ec2.primary_type, spot=False, tags=tags
        ),
        "workers": instance_config(
            settings,
            role="worker",
            instance_type=ec2.worker_type,
            spot=ec2.worker_spot,
            tags=tags,
        ),  # fmt: skip
        "user_data": {
            "cluster_id": cluster_id,
            "log_prefix": log_prefix,
            "code_prefix": code["prefix"],
            "workers": ec2.worker_count,
            "ready_timeout": ec2.ready_timeout,
            "lifetime_minutes": lifetime,
            "hadoop_aws": ec2.hadoop_version,
            # offline installs: the staged wheels of the ec2 set for the nodes' arch
            "wheels_uri": node_wheels("ec2", ec2.arch, settings.jobs_dir).uri(settings.bucket),
            "jars_uri": ec2.jars_uri,
            "python": ec2.python,
        },
    }


def run_instances_request(
    cluster: Mapping[str, Any], role: str, *, user_data: str, client_token: str, attempt: str
) -> dict[str, Any]:
    """The whole ``RunInstances`` request for one role of one attempt of the cluster.

    The primary is one instance; the workers are ``MinCount=1``, ``MaxCount=N``: EC2
    launches as many as it can grant (spot capacity) and the cluster starts at a quorum
    (``fruits.clusters.common.standalone.quorum``) instead of failing. ``client_token``
    (``fruits.clusters.ec2.attempt.client_token``) makes a retried call idempotent; the
    attempt's name joins the tags of every resource."""
    primary = role == "primary"
    config = cluster["primary" if primary else "workers"]
    specs = [
        {**spec, "Tags": [*spec["Tags"], {"Key": ATTEMPT_TAG, "Value": attempt}]}
        for spec in config.get("TagSpecifications", [])
    ]
    return {
        **config,
        "TagSpecifications": specs,
        "ImageId": cluster["image_id"],
        "MinCount": 1,
        "MaxCount": 1 if primary else int(cluster["worker_count"]),
        "ClientToken": client_token,
        "UserData": user_data,
    }
