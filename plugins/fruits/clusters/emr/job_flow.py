"""The ``emr`` backend's cluster request: ``job_flow.json`` (the ``RunJobFlow`` request, a
valid JSON file whose ``"{{name}}"`` strings are placeholders) rendered for
``EmrCreateJobFlowOperator``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fruits.clusters.common import executor_sizing
from fruits.settings import Settings
from fruits.storage.wheels import node_wheels

TEMPLATE = Path(__file__).with_name("job_flow.json")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_DROP = object()


def _render(node: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        out = {k: _render(v, values) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not _DROP}
    if isinstance(node, list):
        return [v for v in (_render(item, values) for item in node) if v is not _DROP]
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:  # "{{x}}" alone takes x's type (numbers, lists); empty drops the key
            value = values[whole.group(1)]
            return _DROP if value in (None, "") else value
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), node)
    return node


def job_flow(settings: Settings, *, name: str, code: Mapping[str, str]) -> dict[str, Any]:
    """The ``RunJobFlow`` request for one run (``code``: URIs from the upload_code task)."""
    emr = settings.emr
    tags = {
        **emr.tags,
        # the Airflow role may only create clusters tagged so (infra/fruits-pipeline.yaml)
        "project": "fruits-pipeline",
        # AmazonEMRServicePolicy_v2 acts only on resources carrying this tag
        "for-use-with-amazon-emr-managed-policies": "true",
    }
    values = {
        "name": name,
        "release_label": emr.release_label,
        "log_uri": emr.log_uri,
        "master_type": emr.master_type,
        "core_type": emr.core_type,
        "core_count": emr.core_count,
        "task_type": emr.task_type,
        "task_spot_count": emr.task_spot_count,
        "subnet": emr.subnet,
        "bootstrap": code["bootstrap"],
        "requirements": code["requirements"],
        # the nodes install offline from the wheels `make stage-wheels` put there
        "wheels": node_wheels("emr", emr.arch, settings.jobs_dir).uri(settings.bucket),
        "python": emr.python,
        "idle_timeout": emr.idle_timeout,
        "instance_profile": emr.instance_profile,
        "service_role": emr.service_role,
        "tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }
    request = _render(json.loads(TEMPLATE.read_text()), values)
    groups = request["Instances"]["InstanceGroups"]
    request["Instances"]["InstanceGroups"] = [g for g in groups if g["InstanceCount"] > 0]
    executor_types = [
        g["InstanceType"]
        for g in request["Instances"]["InstanceGroups"]
        if g["InstanceRole"] in ("CORE", "TASK")
    ]
    add_configurations(request["Configurations"], executor_configurations(executor_types))
    return request


def executor_configurations(instance_types: list[str]) -> list[dict[str, Any]]:
    """The executors' size on the core and task nodes, by the backends' one rule
    (:func:`fruits.clusters.common.executor_sizing.size_executors`, with EMR's room for
    HDFS, its agents and the application master), for the smallest of those nodes: the
    executor settings, and YARN's memory per node set to match (EMR's own default is
    lower than that on some types, and an executor larger than YARN's node never starts).
    A type of unknown shape falls back to EMR's ``maximizeResourceAllocation``."""
    shapes = [executor_sizing.instance_shape(t) for t in instance_types]
    if not shapes or None in shapes:
        return [{"Classification": "spark", "Properties": {"maximizeResourceAllocation": "true"}}]
    vcpus = min(v for v, _ in shapes)
    memory = min(m for _, m in shapes)
    size = executor_sizing.size_executors(vcpus, memory, executor_sizing.emr_reserved_mib(memory))
    yarn_mib = memory - executor_sizing.yarn_reserved_mib(memory)
    return [
        {"Classification": "spark-defaults", "Properties": size.spark_conf()},
        {
            "Classification": "yarn-site",
            "Properties": {
                "yarn.nodemanager.resource.memory-mb": str(yarn_mib),
                "yarn.scheduler.maximum-allocation-mb": str(yarn_mib),
            },
        },
    ]


def add_configurations(configurations: list[dict[str, Any]], extra: list[dict[str, Any]]) -> None:
    """Merge ``extra`` into the request's ``Configurations``: a classification already
    there gets the properties added, others are appended."""
    by_name = {c["Classification"]: c for c in configurations}
    for item in extra:
        if item["Classification"] in by_name:
            by_name[item["Classification"]].setdefault("Properties", {}).update(item["Properties"])
        else:
            configurations.append(item)
