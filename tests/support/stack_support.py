"""The stack's template with grants taken away: how the IAM tests prove a missing grant
is caught."""

from __future__ import annotations

import copy


def without(template: dict, resource: str, sid: str | None = None) -> dict:
    """The template without a resource, or without one statement of it."""
    t = copy.deepcopy(template)
    if sid is None:
        del t["Resources"][resource]
        return t
    props = t["Resources"][resource]["Properties"]
    docs = [props["PolicyDocument"]] if "PolicyDocument" in props else [
        p["PolicyDocument"] for p in props["Policies"]
    ]  # fmt: skip
    for doc in docs:
        doc["Statement"] = [st for st in doc["Statement"] if st.get("Sid") != sid]
    return t
