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
    # EMR Serverless's jobs: the Spark jobs only (clusters/serverless/ is Airflow's code,
    # under "airflow"); their archive is unpacked by Spark, not by code of ours
    "serverless-job": Role((JOBS,), stack="ServerlessJobRole"),
}

# Functions that run with an operator's own credentials (``make stage-weights``), not as
# any role of the stack: their calls are not collected, and no code outside plugins/fruits/
# dev/ may call them (:func:`operator_only_callers`).
OPERATOR_ONLY = {
    "plugins/fruits/storage/weights.py": ("stage", "_remote_sha256"),
    "plugins/fruits/storage/wheels.py": ("upload_wheels",),  # make stage-wheels
    # make stage-weights: the converted models and their sources' sidecars
    "plugins/fruits/storage/converted_models.py": ("upload", "record_source"),
}
OPERATOR_CALLERS = ("plugins/fruits/dev/",)

_RECEIVER = re.compile(
    r"^_?(hook|\w+_hook|s3|\w+_s3|s3_\w+|emr|ec2|ssm|client|\w+_client|conn|boto3)$"
)
_KEYISH = re.compile(r"(prefix|root|key|uri)$", re.IGNORECASE)
_KEY_ARGS = frozenset({"key", "prefix", "Key", "Prefix", "s3_prefix", "dest_key", "source_key"})
_RETURNS_CLIENT = frozenset({"get_key", "get_conn", "client", "Object"})
_TOP = re.compile(r"^[a-z][a-z0-9_.=-]*/")
S3_URI = re.compile(r"s3a?://[^/{}\s\"']+/([a-z_][a-z0-9_.=-]*/(?:[a-z_][a-z0-9_.-]*/)?)")


@dataclass
class Found:
    """What one scan found: actions, prefixes, (prefix, action) pairs where a call's key
    is known to be under a prefix (``aws s3`` commands, keys built from a layout
    function or constant), each with where; and what it could not map."""

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


def collect(
    role: str,
    root: Path = ROOT,
    roles: dict[str, Role] | None = None,
    symbols: dict[str, str] | None = None,
) -> Found:
    """Everything the files of ``role`` ask of AWS (``symbols``: :func:`prefix_symbols`)."""
    from infra.shell_grants import scan_shell

    found = Found()
    symbols = prefix_symbols(root, roles) if symbols is None else symbols
    for path in role_files((roles or ROLES)[role], root):
        text, where = path.read_text(), str(path.relative_to(root))
        if path.suffix == ".sh":
            found.merge(scan_shell(text, where))
        else:
            found.merge(scan_python(text, where, symbols))
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


def _locals(scope: ast.AST) -> dict[str, ast.AST]:
    """Name -> value of the single-name assignments directly in a module or function."""
    found: dict[str, ast.AST] = {}
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                found.setdefault(target.id, node.value)
            elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                for t, v in zip(target.elts, node.value.elts, strict=False):
                    if isinstance(t, ast.Name):
                        found.setdefault(t.id, v)
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.value is not None
        ):
            found.setdefault(node.target.id, node.value)
    return found


def _prefix_of(node: ast.AST, names: dict[str, ast.AST], symbols: dict[str, str], depth=0):
    """The top-level prefix a key expression starts with, if it can be told: a literal,
    an f-string or ``+`` starting with one, a name assigned one, or a call of a function
    (``raw_prefix(batch)``) or a constant (``STAGING_ROOT``) whose value starts with one."""
    if depth > 8:
        return None
    if isinstance(node, ast.Constant | ast.JoinedStr):
        head = _literal_head(node)
        if head is not None:
            return _top_prefix(head)
        first = node.values[0] if isinstance(node, ast.JoinedStr) and node.values else None
        return _prefix_of(first.value, names, symbols, depth + 1) if first else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _prefix_of(node.left, names, symbols, depth + 1)
    if isinstance(node, ast.Name):
        if node.id in names:
            return _prefix_of(names[node.id], {}, symbols, depth + 1)
        return symbols.get(node.id)
    if isinstance(node, ast.Attribute):
        return symbols.get(node.attr)
    if isinstance(node, ast.Call):
        return symbols.get(_name(node.func).rsplit(".", 1)[-1])
    return None


def prefix_symbols(root: Path = ROOT, roles: dict[str, Role] | None = None) -> dict[str, str]:
    """Module-level constants and functions whose value starts with a top-level prefix,
    by bare name (a name two modules give different prefixes is left out)."""
    found: dict[str, set[str]] = {}
    defs: list[tuple[str, ast.AST, dict[str, ast.AST]]] = []
    paths = {p for role in (roles or ROLES).values() for p in role_files(role, root)}
    for path in sorted(p for p in paths if p.suffix == ".py"):
        tree = ast.parse(path.read_text())
        for name, value in _locals(ast.Module(body=[
            n for n in tree.body if isinstance(n, ast.Assign | ast.AnnAssign)
        ], type_ignores=[])).items():  # fmt: skip
            defs.append((name, value, {}))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                names = _locals(node)
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Return) and sub.value is not None:
                        defs.append((node.name, sub.value, names))
    symbols: dict[str, str] = {}
    for _ in range(3):  # functions built from functions: raw_prefix <- run_uris <- ...
        found.clear()
        for name, value, names in defs:
            prefix = _prefix_of(value, names, symbols)
            if prefix:
                found.setdefault(name, set()).add(prefix)
        symbols = {n: p.pop() for n, p in found.items() if len(p) == 1}
    return symbols


def _link_keys(call: ast.Call, names: dict[str, ast.AST], symbols: dict[str, str]):
    """The prefixes of the keys an S3 call names (positional arguments, ``key=``,
    ``keys=[...]``, ``prefix=``), where they can be told."""
    args = [*call.args, *(k.value for k in call.keywords if k.arg in _KEY_ARGS | {"keys"})]
    for arg in args:
        for item in arg.elts if isinstance(arg, ast.List | ast.Tuple) else [arg]:
            prefix = _prefix_of(item, names, symbols)
            if prefix:
                yield prefix


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


def scan_python(text: str, where: str, symbols: dict[str, str] | None = None) -> Found:
    """The AWS actions and S3 prefixes of one Python file; ``symbols``
    (:func:`prefix_symbols`) tell the prefixes of keys built elsewhere."""
    tree = ast.parse(text)
    symbols = symbols or {}
    operator = {
        id(sub)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef) and fn.name in OPERATOR_ONLY.get(where, ())
        for sub in ast.walk(fn)
    }  # fmt: skip
    scopes: dict[int, dict[str, ast.AST]] = {}  # call -> its function's assignments
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            names = _locals(fn)
            scopes.update((id(c), names) for c in ast.walk(fn) if isinstance(c, ast.Call))
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
        if id(node) in operator:
            continue
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
        for prefix in _link_keys(node, scopes.get(id(node), {}), symbols):
            for action in actions:
                if action.startswith("s3:") and "@" not in action:
                    found.linked.setdefault((prefix, action), call)
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


def operator_only_callers(root: Path = ROOT) -> list[str]:
    """Where code outside OPERATOR_CALLERS imports an OPERATOR_ONLY function by name, or
    its own module calls it (it would run as Airflow, with grants nobody checked)."""
    found = []
    files = sorted(root.glob("plugins/**/*.py")) + sorted(root.glob("dags/**/*.py"))
    for home, funcs in OPERATOR_ONLY.items():
        module = home.removeprefix("plugins/").removesuffix(".py").replace("/", ".")
        for path in files:
            where = str(path.relative_to(root))
            if where.startswith(OPERATOR_CALLERS):
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.ImportFrom) and node.module == module:
                    names = [a.name for a in node.names if a.name in funcs]
                elif where == home and isinstance(node, ast.FunctionDef):
                    calls = [c for c in ast.walk(node) if isinstance(c, ast.Call)]
                    names = [
                        _name(c.func) for c in calls
                        if _name(c.func) in funcs and node.name not in funcs
                    ]  # fmt: skip
                found += [f"{where}:{node.lineno}: {n} runs as the operator" for n in names]
    return found
