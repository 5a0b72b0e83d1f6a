"""An ``ec2`` cluster's instances: the tags that find them again, and the states that
say whether they still run (or bill)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PROJECT_TAG = {"Key": "project", "Value": "fruits-pipeline"}
CLUSTER_TAG = "fruits:cluster-id"
BUCKET_TAG = "fruits:bucket"  # whose clusters a run may reap: this pipeline's bucket's
ROLE_TAG = "fruits:role"
GONE = ("shutting-down", "terminated", "stopping", "stopped")
LIVE = ("pending", "running", "stopping", "stopped")  # billing, or could be again


def instances(described: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The instances of a ``describe_instances`` answer, out of their reservations."""
    return [i for r in described["Reservations"] for i in r["Instances"]]


def tags(instance: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def nodes_gone(found: list[Mapping[str, Any]]) -> str | None:
    """``instance i-... is terminated: <reason>`` for the first node that is ending."""
    for inst in found:
        state = inst.get("State", {}).get("Name")
        if state in GONE:
            reason = inst.get("StateReason", {}).get("Message") or inst.get(
                "StateTransitionReason", ""
            )
            return f"instance {inst['InstanceId']} is {state}" + (f": {reason}" if reason else "")
    return None
