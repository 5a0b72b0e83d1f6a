"""A least-privilege check for the CloudFormation templates, stricter than cfn-lint.

cfn-lint proves a template is valid; this proves it grants nothing broad: no
wildcard actions or resources in an Allow (except actions AWS cannot scope, and
then only under a condition), no public principal, PassRole only on named roles,
and every bucket private, encrypted, versioned and TLS-only.

    python -m infra.check_policies infra/fruits-pipeline.yaml
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Actions with no resource-level permissions: "*" is the only valid Resource for them,
# so they are allowed only when a Condition narrows them (e.g. by request tags).
UNSCOPABLE_ACTIONS = frozenset({"elasticmapreduce:RunJobFlow"})
PUBLIC_ACCESS_BLOCKS = (
    "BlockPublicAcls",
    "BlockPublicPolicy",
    "IgnorePublicAcls",
    "RestrictPublicBuckets",
)


def load(path: str | Path) -> dict:
    from cfnlint.decode import decode

    template, errors = decode(str(path))
    if errors:
        raise ValueError(f"{path}: {errors}")
    return template


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def policy_documents(template: dict) -> Iterator[tuple[str, dict]]:
    """(where, document) for every IAM / bucket policy document in the template."""
    for name, res in template.get("Resources", {}).items():
        props = res.get("Properties", {})
        kind = res.get("Type", "")
        if kind in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy", "AWS::S3::BucketPolicy"):
            yield name, props.get("PolicyDocument", {})
        if kind == "AWS::IAM::Role":
            for p in props.get("Policies", []):
                yield f"{name}.{p.get('PolicyName')}", p.get("PolicyDocument", {})


def _is_public(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        return any(v == "*" or "*" in _as_list(v) for v in principal.values())
    return False


def statement_findings(where: str, st: dict) -> Iterator[str]:
    sid = f"{where}/{st.get('Sid', '?')}"
    if st.get("Effect") != "Allow":
        return  # a Deny may (and for TLS-only, must) name every principal
    if "NotAction" in st or "NotResource" in st:
        yield f"{sid}: NotAction/NotResource in an Allow grants everything else"
    actions = [a for a in _as_list(st.get("Action", [])) if isinstance(a, str)]
    resources = _as_list(st.get("Resource", []))
    for a in actions:
        if a == "*" or a.endswith(":*"):
            yield f"{sid}: wildcard action {a!r}"
    if "*" in resources:
        broad = [a for a in actions if a not in UNSCOPABLE_ACTIONS]
        if broad:
            yield f"{sid}: Resource '*' for {broad}"
        elif not st.get("Condition"):
            yield f"{sid}: Resource '*' without a Condition"
    if "iam:PassRole" in actions and any(isinstance(r, str) and "*" in r for r in resources):
        yield f"{sid}: iam:PassRole on a wildcard resource"
    if "Principal" in st and _is_public(st["Principal"]):
        yield f"{sid}: public principal in an Allow"


def bucket_findings(name: str, props: dict, template: dict) -> Iterator[str]:
    block = props.get("PublicAccessBlockConfiguration", {})
    for key in (
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ):
        if block.get(key) is not True:
            yield f"{name}: {key} is not true"
    if props.get("AccessControl") not in (None, "Private", "BucketOwnerFullControl"):
        yield f"{name}: canned ACL {props['AccessControl']!r}"
    if props.get("VersioningConfiguration", {}).get("Status") != "Enabled":
        yield f"{name}: versioning is not enabled"
    if not props.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration"):
        yield f"{name}: no default encryption"
    if not props.get("LifecycleConfiguration", {}).get("Rules"):
        yield f"{name}: no lifecycle rules"
    if not _denies_plain_http(name, template):
        yield f"{name}: no bucket policy denying requests without TLS"


def _denies_plain_http(bucket: str, template: dict) -> bool:
    for res in template.get("Resources", {}).values():
        if res.get("Type") != "AWS::S3::BucketPolicy":
            continue
        props = res.get("Properties", {})
        if props.get("Bucket") != {"Ref": bucket}:
            continue
        for st in _as_list(props.get("PolicyDocument", {}).get("Statement", [])):
            cond = st.get("Condition", {}).get("Bool", {})
            if (
                st.get("Effect") == "Deny"
                and str(cond.get("aws:SecureTransport")).lower() == "false"
            ):
                return True
    return False


def findings(template: dict) -> list[str]:
    out: list[str] = []
    for where, doc in policy_documents(template):
        for st in _as_list(doc.get("Statement", [])):
            out.extend(statement_findings(where, st))
    for name, res in template.get("Resources", {}).items():
        if res.get("Type") == "AWS::S3::Bucket":
            out.extend(bucket_findings(name, res.get("Properties", {}), template))
    return out


def main(argv: list[str] | None = None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    bad = [f"{p}: {f}" for p in paths for f in findings(load(p))]
    print("\n".join(bad) if bad else f"{len(paths)} template(s): no findings")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
