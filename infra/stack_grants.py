"""What the stack grants a role, asked one (action, resource) at a time.

The code's needs come from :mod:`infra.code_grants`; :func:`check` holds them against
the stack: a role's Allow statements (its inline policies, and the managed policies
attached to it, conditional ones included) must cover each need. Resources are compared
as written (``${DataBucket.Arn}/raw/*``), with ``fnmatch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from infra.aws_actions import MODES, PREFIXES, SOURCE
from infra.code_grants import (
    JOBS,
    ROLES,
    ROOT,
    Role,
    collect,
    operator_only_callers,
    prefix_symbols,
    role_files,
    table_prefix,
)

DATA = "${DataBucket.Arn}"
SOURCE_BUCKET = "arn:${AWS::Partition}:s3:::${SourceBucket}"
SOURCE_KEY = "${SourcePrefix}"  # the source's keys start with the parameter's value
# Actions without resource-level permissions: only an Allow on "*" covers them.
UNSCOPED = ("ec2:Describe*", "ssm:GetCommandInvocation", "elasticmapreduce:RunJobFlow")


@dataclass(frozen=True)
class Need:
    """One thing a role must be allowed: ``resource`` is "*" (any), ``object:<key>``,
    ``list:<prefix>`` (s3:ListBucket with that s3:prefix), ``bucket`` (the bucket itself,
    no prefix) or ``role:<Resource>`` (iam:PassRole)."""

    action: str
    resource: str
    bucket: str = DATA


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _text(value: Any) -> str:
    """A resource as written: "*", a Fn::Sub's string, ``${X.Arn}`` for a GetAtt."""
    if isinstance(value, str):
        return value
    if "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    if "Fn::GetAtt" in value:
        att = value["Fn::GetAtt"]
        name, attr = att.split(".", 1) if isinstance(att, str) else att
        return f"${{{name}.{attr}}}"
    if "Ref" in value:
        return f"${{{value['Ref']}}}"
    return repr(value)


def role_statements(template: dict, role: str) -> list[dict]:
    """Every Allow statement of ``role`` (a Role resource, or the parameter naming an
    existing role): its inline policies and the policies attached to it."""
    found = []
    for name, res in template.get("Resources", {}).items():
        props = res.get("Properties", {})
        if name == role and res.get("Type") == "AWS::IAM::Role":
            docs = [p.get("PolicyDocument", {}) for p in props.get("Policies", [])]
        elif {"Ref": role} in props.get("Roles", []):
            docs = [props.get("PolicyDocument", {})]
        else:
            continue
        for doc in docs:
            for st in _as_list(doc.get("Statement", [])):
                if st.get("Effect") == "Allow":
                    found.append({**st, "_policy": name, "_if": res.get("Condition")})
    return found


def _allows(st: dict, need: Need) -> bool:
    if not any(fnmatchcase(need.action, a) for a in _as_list(st.get("Action", []))):
        return False
    resources = [_text(r) for r in _as_list(st.get("Resource", []))]
    if any(fnmatchcase(need.action, u) for u in UNSCOPED):
        return "*" in resources
    kind, _, rest = need.resource.partition(":")
    if kind == "object":
        return any(fnmatchcase(f"{need.bucket}/{rest}", r) for r in resources)
    if kind in ("list", "bucket"):
        if need.bucket not in resources:
            return False
        cond = st.get("Condition", {})
        allowed = [
            _text(p) for op in ("StringLike", "StringEquals")
            for p in _as_list(cond.get(op, {}).get("s3:prefix", []))
        ]  # fmt: skip
        if not allowed:
            return True
        return kind == "list" and any(fnmatchcase(rest, p) for p in allowed)
    if kind == "role":
        return f"${{{rest}.Arn}}" in resources
    return True  # "*": the stack may scope it (tags, regions); the need is the action


def granted(template: dict, role: str, need: Need) -> bool:
    return any(_allows(st, need) for st in role_statements(template, role))


def prefix_needs(role: str, prefixes: dict[str, str]) -> dict[Need, str]:
    """Need -> why, for the S3 access PREFIXES gives ``role`` under each prefix found."""
    needs: dict[Need, str] = {}
    for prefix, where in prefixes.items():
        row = max((p for p in PREFIXES if prefix.startswith(p)), key=len, default=None)
        if row is None:
            continue  # reported as unmapped by the caller
        bucket, key = (SOURCE_BUCKET, SOURCE_KEY) if row == SOURCE else (DATA, prefix)
        for mode in PREFIXES[row].get(role, ""):
            action = MODES[mode]
            resource = f"list:{key}any/" if mode == "l" else f"object:{key}any"
            needs.setdefault(Need(action, resource, bucket), f"{row} '{mode}' ({where})")
    return needs


def action_needs(actions: dict[str, str]) -> dict[Need, str]:
    """Need -> where, for the actions that are not object access under a prefix."""
    needs: dict[Need, str] = {}
    for entry, where in actions.items():
        action, _, target = entry.partition("@")
        if target == "bucket":
            needs[Need(action, "bucket")] = where
        elif target:
            needs[Need(action, f"role:{target}")] = where
        elif not action.startswith("s3:"):
            needs[Need(action, "*")] = where
    return needs


def check(template: dict, root: Path = ROOT, roles: dict[str, Role] | None = None) -> list[str]:
    """Every problem between the code under ``root`` and the stack: calls and prefixes it
    cannot map, and needs (per role) no Allow of that role covers."""
    roles = roles or ROLES
    symbols = prefix_symbols(root, roles)
    found = {name: collect(name, root, roles, symbols) for name in roles}
    prefixes: dict[str, str] = {}
    for f in found.values():
        for prefix, where in f.prefixes.items():
            prefixes.setdefault(prefix, where)
    problems = [f"unmapped call: {u}" for f in found.values() for u in f.unmapped]
    problems += operator_only_callers(root)
    problems += [
        f"unmapped prefix: {p} ({where}): add a row to aws_actions.PREFIXES"
        for p, where in sorted(prefixes.items()) if table_prefix(p) is None
    ]  # fmt: skip
    for name, role in roles.items():
        if role.stack is None:
            own = [p for p in role_files(role, root) if p not in role_files(Role((JOBS,)), root)]
            if own:
                problems.append(f"{name}: code ({own[0].relative_to(root)}) but no stack role")
            continue
        letters = {m for row in PREFIXES.values() for m in row.get(name, "")}
        for action, where in found[name].actions.items():
            mode = next((m for m, a in MODES.items() if a == action), None)
            if mode and mode not in letters:
                problems.append(f"{name}: {action} ({where}) under no prefix of PREFIXES")
        for (prefix, action), where in found[name].linked.items():
            row = table_prefix(prefix)
            mode = next(m for m, a in MODES.items() if a == action)
            if row is not None and mode not in PREFIXES[row].get(name, ""):
                problems.append(f"{name}: {action} under {prefix} ({where}), not in PREFIXES")
        needs = {**action_needs(found[name].actions), **prefix_needs(name, prefixes)}
        for need, why in needs.items():
            if not granted(template, role.stack, need):
                on = need.resource if need.bucket == DATA else f"{need.bucket} {need.resource}"
                problems.append(f"{name} ({role.stack}): {need.action} on {on} not granted: {why}")
    return problems
