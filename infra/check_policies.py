"""A least-privilege check for the CloudFormation templates, stricter than cfn-lint.

cfn-lint proves a template is valid; this proves it grants nothing broad: no
wildcard actions or resources in an Allow (except actions AWS cannot scope, and
then only under a condition), no public principal, no object access to a whole
bucket, PassRole only on roles the template names and only to a named service,
actions that create, run on or destroy compute only under the project's tag,
only the AWS managed policies listed here, every bucket private, encrypted,
versioned, TLS-only and access-logged (a log bucket excepted from logging), and
no security group open to the internet or to SSH.

    python -m infra.check_policies infra/fruits-pipeline.yaml
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Actions with no resource-level permissions: "*" is the only valid Resource for them,
# so they are allowed only when a Condition narrows them (e.g. by request tags).
UNSCOPABLE_ACTIONS = frozenset(
    {
        "elasticmapreduce:RunJobFlow",
        "ec2:DescribeInstances",
        "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups",
        "ssm:GetCommandInvocation",
        "ec2:GetEbsDefaultKmsKeyId",  # the ec2 pre-flight's look at the default EBS key
        "emr-serverless:ListApplications",  # the serverless teardown finds its application
    }
)
PROJECT = "fruits-pipeline"
# An Allow of one of these actions on one of these resource types (None: any) must carry
# StringEquals {key: value} for one of the keys: only the project's resources, tags only
# on create, a service-linked role only for its service.
GUARDS: tuple[tuple[str, tuple[str, ...] | None, tuple[str, ...], str], ...] = (
    ("elasticmapreduce:RunJobFlow", None, ("aws:RequestTag/project",), PROJECT),
    ("elasticmapreduce:AddJobFlowSteps", None, ("aws:ResourceTag/project",), PROJECT),
    ("elasticmapreduce:TerminateJobFlows", None, ("aws:ResourceTag/project",), PROJECT),
    ("emr-serverless:CreateApplication", None, ("aws:RequestTag/project",), PROJECT),
    ("emr-serverless:StartJobRun", None, ("aws:ResourceTag/project",), PROJECT),
    ("emr-serverless:DeleteApplication", None, ("aws:ResourceTag/project",), PROJECT),
    (
        "ec2:RunInstances",
        ("instance", "volume", "network-interface"),
        ("aws:RequestTag/project",),
        PROJECT,
    ),
    ("ec2:CreateTags", None, ("ec2:CreateAction",), "RunInstances"),
    ("iam:CreateServiceLinkedRole", None, ("iam:AWSServiceName",), "spot.amazonaws.com"),
    (
        "ec2:TerminateInstances",
        None,
        ("ec2:ResourceTag/project", "aws:ResourceTag/project"),
        PROJECT,
    ),
    (
        "ssm:SendCommand",
        ("instance", "managed-instance"),
        ("ssm:resourceTag/project", "aws:ResourceTag/project"),
        PROJECT,
    ),
)
# AWS managed policies a role may carry (all others, AdministratorAccess first, may not).
MANAGED_POLICIES = frozenset(
    {"service-role/AmazonEMRServicePolicy_v2", "AmazonSSMManagedInstanceCore"}
)
S3_OBJECT_ACTIONS = frozenset(
    {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:GetObjectVersion"}
)
WORLD = ("0.0.0.0/0", "::/0")
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


def _text(value: Any) -> str | None:
    """A resource as written: a plain string or the string of a Fn::Sub; None otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return None


def _resource_type(text: str) -> str | None:
    """'instance' for arn:${AWS::Partition}:ec2:...:instance/*; None without a type/."""
    head, slash, _ = text.partition("/")
    return head.rsplit(":", 1)[-1] if slash and text.startswith("arn:") else None


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
    texts = [t for t in map(_text, resources) if t is not None]
    if "iam:PassRole" in actions and any("*" in t for t in texts):
        yield f"{sid}: iam:PassRole on a wildcard resource"
    if "Principal" in st and _is_public(st["Principal"]):
        yield f"{sid}: public principal in an Allow"
    whole_bucket = [
        t for t in texts
        if re.fullmatch(r"\$\{[A-Za-z0-9]+\.Arn\}/\*|arn:[^:]*:s3:::[^/]+/\*", t)
    ]  # fmt: skip
    if whole_bucket and S3_OBJECT_ACTIONS & set(actions):
        yield f"{sid}: object access to a whole bucket {whole_bucket}"
    yield from _guard_findings(sid, st, actions, resources)


def _guard_findings(sid: str, st: dict, actions: list[str], resources: list) -> Iterator[str]:
    equals = st.get("Condition", {}).get("StringEquals", {})
    for action, types, keys, value in GUARDS:
        if action not in actions:
            continue
        if types is not None:
            texts = [_text(r) for r in resources]
            if not any(t == "*" or (t and _resource_type(t) in types) for t in texts):
                continue
        if not any(value in _as_list(equals.get(k, [])) for k in keys):
            yield f"{sid}: {action} without StringEquals {keys[0]}: {value}"


def pass_role_findings(where: str, st: dict, template: dict) -> Iterator[str]:
    """PassRole only on roles this template names, and only to a named service."""
    if st.get("Effect") != "Allow" or "iam:PassRole" not in _as_list(st.get("Action", [])):
        return
    sid = f"{where}/{st.get('Sid', '?')}"
    resources = template.get("Resources", {})
    for r in _as_list(st.get("Resource", [])):
        att = r.get("Fn::GetAtt") if isinstance(r, dict) else None
        target, attribute = (att.split(".", 1) if isinstance(att, str) else att) or (None, None)
        if attribute != "Arn" or resources.get(target, {}).get("Type") != "AWS::IAM::Role":
            yield f"{sid}: iam:PassRole on {r!r}, not a role of this template"
    services = st.get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService")
    if not services or any("*" in s for s in _as_list(services)):
        yield f"{sid}: iam:PassRole without StringEquals iam:PassedToService"


def managed_policy_findings(name: str, props: dict) -> Iterator[str]:
    for arn in props.get("ManagedPolicyArns", []):
        text = _text(arn) or ""
        policy = text.partition(":iam::aws:policy/")[2]
        if policy not in MANAGED_POLICIES:
            yield f"{name}: managed policy {text or arn!r} is not in MANAGED_POLICIES"


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
    destination = props.get("LoggingConfiguration", {}).get("DestinationBucketName")
    if destination == {"Ref": name}:
        yield f"{name}: access logs delivered to the bucket itself"
    elif destination is None and not _is_log_destination(name, template):
        yield f"{name}: no access logging (and not the log bucket of another)"


def _is_log_destination(bucket: str, template: dict) -> bool:
    return any(
        res.get("Type") == "AWS::S3::Bucket"
        and res.get("Properties", {}).get("LoggingConfiguration", {}).get("DestinationBucketName")
        == {"Ref": bucket}
        for name, res in template.get("Resources", {}).items()
        if name != bucket
    )


def security_group_findings(template: dict) -> Iterator[str]:
    """No ingress from the internet, no SSH from any address range, every rule described."""
    for name, res in template.get("Resources", {}).items():
        kind, props = res.get("Type"), res.get("Properties", {})
        if kind == "AWS::EC2::SecurityGroup":
            ingress = props.get("SecurityGroupIngress", [])
            rules = [(name, r, True) for r in ingress]
            rules += [(name, r, False) for r in props.get("SecurityGroupEgress", [])]
        elif kind in ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"):
            rules = [(name, props, kind.endswith("Ingress"))]
        else:
            continue
        for where, rule, inbound in rules:
            if not rule.get("Description"):
                yield f"{where}: security group rule without a Description"
            if not inbound:
                continue
            cidrs = [rule[k] for k in ("CidrIp", "CidrIpv6") if k in rule]
            if any(c in WORLD for c in cidrs):
                yield f"{where}: ingress from the internet ({cidrs})"
            if cidrs and _covers_port(rule, 22):
                yield f"{where}: SSH (port 22) open to {cidrs}"


def _covers_port(rule: dict, port: int) -> bool:
    if str(rule.get("IpProtocol")) in ("-1", "all"):
        return True
    low, high = rule.get("FromPort"), rule.get("ToPort")
    if not isinstance(low, int) or not isinstance(high, int):
        return True  # a parameter could open anything
    return low <= port <= high


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
            out.extend(pass_role_findings(where, st, template))
    for name, res in template.get("Resources", {}).items():
        if res.get("Type") == "AWS::S3::Bucket":
            out.extend(bucket_findings(name, res.get("Properties", {}), template))
        if res.get("Type") == "AWS::IAM::Role":
            out.extend(managed_policy_findings(name, res.get("Properties", {})))
    out.extend(security_group_findings(template))
    return out


def main(argv: list[str] | None = None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    bad = [f"{p}: {f}" for p in paths for f in findings(load(p))]
    print("\n".join(bad) if bad else f"{len(paths)} template(s): no findings")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
