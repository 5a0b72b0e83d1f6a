"""What the code asks of AWS, read from its source: per role, every AWS action it calls,
and every top-level S3 prefix it builds keys under.

moto enforces no IAM, so a missing grant shows only on a real account; this collector
and :mod:`infra.stack_grants` make it show in the tests. A call or a prefix it cannot map
(:mod:`infra.aws_actions`) is reported, never skipped: a new call needs a table entry
and a grant.

An AWS call is ``<receiver>.<method>(...)`` where the receiver is a hook or a client: a
name such as ``hook``, ``source_hook``, ``s3``, ``emr``, ``client`` (or ``self.<that>``),
``<x>.conn``, ``<x>.get_conn()``, ``boto3``, a name assigned one of those, or what
``get_key`` returns. The provider's classes count by the name they are imported as.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from infra.aws_actions import PREFIXES, PROVIDER, SOURCE, SPARK_IO, client_call

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Role:
    """A principal the code runs as: its files, and the stack's role (None: planned)."""

    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()  # folders
    stack: str | None = None  # a Role resource, or the parameter naming an existing role


JOBS = "spark_jobs/**/*.py"
ROLES: dict[str, Role] = {
    "airflow": Role(
        ("plugins/fruits/**/*.py", "dags/**/*.py"),
        ("plugins/fruits/clusters/ec2/node/", "plugins/fruits/dev/"),
        stack="AirflowRoleName",
    ),
    "emr-node": Role((JOBS, "plugins/fruits/clusters/emr/*.sh"), stack="EmrInstanceRole"),
    "ec2-node": Role(
        (
            JOBS,
            "plugins/fruits/clusters/ec2/node/**/*.py",
            "plugins/fruits/clusters/ec2/node/*.sh",
            "plugins/fruits/clusters/common/step_runner.py",  # shipped beside node.py
        ),
        stack="Ec2NodeRole",
    ),
    # The hook for EMR Serverless: once clusters/serverless/ exists, its job role must be
    # in the stack (set ``stack``), or the check fails (test_iam_follows_code).
    "serverless-job": Role((JOBS, "plugins/fruits/clusters/serverless/**/*.py")),
}

_RECEIVER = re.compile(r"^_?(hook|\w+_hook|s3|\w+_s3|s3_\w+|emr|ec2|ssm|client|conn|boto3)$")
_KEYISH = re.compile(r"(prefix|root|key|uri)$", re.IGNORECASE)
_KEY_ARGS = frozenset({"key", "prefix", "Key", "Prefix", "s3_prefix", "dest_key", "source_key"})
_RETURNS_CLIENT = frozenset({"get_key", "get_conn", "client", "Object"})
_TOP = re.compile(r"^[a-z][a-z0-9_.=-]*/")
S3_URI = re.compile(r"s3a?://[^/{}\s\"']+/([a-z_][a-z0-9_.=-]*/(?:[a-z_][a-z0-9_.-]*/)?)")


@dataclass
class Found:
    """What one scan found: actions, prefixes, actions known to act under one prefix
    (``aws s3`` commands), each with where; and what it could not map."""

    actions: dict[str, str] = field(default_factory=dict)
    prefixes: dict[str, str] = field(default_factory=dict)
    linked: dict[tuple[str, str], str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)

    def add(self, actions: Iterable[str], where: str) -> None:
        for action in actions:
            self.actions.setdefault(action, where)

    def merge(self, other: Found) -> None:
        for action, where in other.actions.items():
            self.actions.setdefault(action, where)
        for prefix, where in other.prefixes.items():
            self.prefixes.setdefault(prefix, where)
        for link, where in other.linked.items():
            self.linked.setdefault(link, where)
        self.unmapped += other.unmapped


def role_files(role: Role, root: Path = ROOT) -> list[Path]:
    files = {p for pattern in role.include for p in root.glob(pattern) if p.is_file()}
    return sorted(
        p for p in files
        if "__pycache__" not in p.parts
        and not str(p.relative_to(root)).startswith(role.exclude or ("\0",))
    )  # fmt: skip


def collect(role: str, root: Path = ROOT, roles: dict[str, Role] | None = None) -> Found:
    """Everything the files of ``role`` ask of AWS."""
    from infra.shell_grants import scan_shell

    found = Found()
    for path in role_files((roles or ROLES)[role], root):
        text, where = path.read_text(), str(path.relative_to(root))
        found.merge(scan_shell(text, where) if path.suffix == ".sh" else scan_python(text, where))
    return found


def table_prefix(prefix: str) -> str | None:
    """The PREFIXES row covering ``prefix`` (the longest that starts it), if any."""
    rows = [row for row in PREFIXES if prefix.startswith(row)]
    return max(rows, key=len) if rows else None


# -- Python ------------------------------------------------------------------------------


def _name(node: ast.AST) -> str:
    """``a.b.c`` for a name or attribute chain, ``f()`` for a call, '' otherwise."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return f"{_name(node.func)}()"
    return ""


def _is_client(node: ast.AST, clients: set[str]) -> bool:
    """Whether ``node`` is a hook or an AWS client (see the module's docstring)."""
    if isinstance(node, ast.Name):
        return node.id in clients or bool(_RECEIVER.match(node.id))
    if isinstance(node, ast.Attribute):
        return node.attr in ("conn", "hook") or bool(_RECEIVER.match(node.attr))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        func = node.func
        return func.attr in _RETURNS_CLIENT and _is_client(func.value, clients)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in PROVIDER or bool(_RECEIVER.match(node.func.id))
    return False


def _literal_head(node: ast.AST) -> str | None:
    """The leading literal of a string or f-string, if it starts with one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant):
            return first.value
    return None


def _top_prefix(text: str) -> str | None:
    """``raw/batch=`` -> ``raw/``: the folders of a key's leading literal."""
    if not _TOP.match(text):
        return None
    return text[: text.rfind("/") + 1]


def _uri_prefixes(node: ast.JoinedStr) -> Iterator[str]:
    """Prefixes after the bucket of ``s3://{bucket}/<prefix>...`` f-strings. (Plain
    ``s3://bucket/...`` text is left out: in this code it is examples and messages.)"""
    parts = node.values
    for i in range(len(parts) - 2):
        head, bucket, tail = parts[i : i + 3]
        if (
            isinstance(head, ast.Constant)
            and str(head.value).endswith(("s3://", "s3a://"))
            and isinstance(bucket, ast.FormattedValue)
            and isinstance(tail, ast.Constant)
            and str(tail.value).startswith("/")
        ):
            prefix = _top_prefix(str(tail.value)[1:])
            if prefix:
                yield prefix


def _key_literals(tree: ast.AST) -> Iterator[tuple[ast.AST, ast.AST]]:
    """(literal, where) for strings used as keys: assigned to ``*prefix``/``*root``/
    ``*key``/``*uri`` names, returned by functions so named, or passed as a key."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [_name(t).rsplit(".", 1)[-1] for t in targets]
            if node.value is not None and any(_KEYISH.search(n) for n in names):
                yield node.value, node
        elif isinstance(node, ast.FunctionDef) and _KEYISH.search(node.name):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Return) and sub.value is not None:
                    yield sub.value, sub
        elif isinstance(node, ast.keyword) and node.arg in _KEY_ARGS:
            yield node.value, node.value


def _aws_receivers(tree: ast.AST) -> set[str]:
    """Names assigned a hook or a client anywhere in the module (``emr = self.hook.conn``)."""
    clients: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _is_client(node.value, clients):
            clients.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return clients


def _provider_imports(tree: ast.AST) -> Iterator[tuple[str, int]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "airflow.providers.amazon"
        ):
            yield from ((alias.name, node.lineno) for alias in node.names)


def _spark_io(call: ast.Call) -> str | None:
    """The SPARK_IO entry of a DataFrame reader/writer chain or a Hadoop ``fs`` call."""
    func = call.func
    if not isinstance(func, ast.Attribute):
        return None
    chain = _name(func.value).replace("()", "").split(".")
    if chain[:1] == ["fs"] and len(chain) == 1:
        return func.attr
    for word in ("read", "write"):
        if word in chain[1:]:
            return word
    return None


def scan_python(text: str, where: str) -> Found:
    """The AWS actions and S3 prefixes of one Python file."""
    tree = ast.parse(text)
    found = Found()
    jobs = where.startswith("spark_jobs/")
    for name, line in _provider_imports(tree):
        if name in PROVIDER:
            found.add(PROVIDER[name], f"{where}:{line} {name}")
        else:
            found.unmapped.append(f"{where}:{line}: {name} (not in aws_actions.PROVIDER)")
    clients = _aws_receivers(tree)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    chained = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            for prefix in _uri_prefixes(node):
                found.prefixes.setdefault(prefix, f"{where}:{node.lineno}")
        if isinstance(node, ast.Attribute) and id(node) not in called:
            # a method passed around, not called here: ``call = client.describe_subnets``
            actions = client_call(node.attr) if _is_client(node.value, clients) else None
            if actions and id(node) not in chained:
                found.add(actions, f"{where}:{node.lineno} {_name(node)}")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        call = f"{where}:{node.lineno} {_name(node.func)}"
        io = _spark_io(node) if jobs else None
        if io is not None:
            if io not in SPARK_IO:
                found.unmapped.append(f"{call} (Spark/Hadoop I/O not in aws_actions.SPARK_IO)")
            found.add(SPARK_IO.get(io, ()), call)
            continue
        if not _is_client(node.func.value, clients):
            continue
        actions = client_call(node.func.attr)
        if actions is None:
            found.unmapped.append(f"{call} (no entry in aws_actions)")
            continue
        found.add(actions, call)
        args = [_name(a) for a in [*node.args, *(k.value for k in node.keywords)]]
        if any("source" in a for a in [_name(node.func.value), *args]) and any(
            a.startswith("s3:") for a in actions
        ):
            found.prefixes.setdefault(SOURCE, call)  # FRUITS_INCOMING's bucket
    for value, at in _key_literals(tree):
        head = _literal_head(value)
        prefix = _top_prefix(head) if head and not head.startswith(("/", "s3")) else None
        if prefix:
            found.prefixes.setdefault(prefix, f"{where}:{at.lineno}")
    return found
