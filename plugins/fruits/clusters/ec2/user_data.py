"""The ``ec2`` backend's node side: the user data that turns a plain Amazon Linux 2023
instance into a Spark standalone node, and the program the nodes run (``node.py``).

- :func:`render_user_data` fills ``user_data.sh`` (a bash script; each ``{{name}}`` in
  it sits inside single quotes) for ``EC2CreateInstanceOperator``: one rendering for
  the primary (Spark master, driver of the steps), one for the workers.
- ``hadoop_aws`` in the user data names the s3a connector (``spark.jars.packages``):
  ``FRUITS_EC2_HADOOP_VERSION``, the Hadoop the pinned pyspark bundles (they must match);
  ``jars_uri`` (``FRUITS_EC2_JARS_URI``), when set, is a folder of those jars in S3 that
  the nodes copy and put on ``spark.jars`` instead (no Maven at run time).
- ``wheels_uri``: the staged wheels of the nodes' requirements
  (:mod:`fruits.storage.wheels`, ``wheels/<hash>/<arch>/``); the nodes install offline
  from them (``pip install --no-index --find-links``).
- ``node.py`` (standard library + boto3; its modules and ``step_runner.py`` sit next
  to it in the code bundle, :func:`node_program`) starts the master or a worker,
  reports ``<log>/ready.json`` or ``<log>/failed/...``, and runs the steps
  (``run-steps``), mirroring their state and output to ``<log>/steps/<id>/``.
  :func:`run_steps_command` is the SSM command that starts it.

Light on purpose: no boto3, Airflow or pyspark import here.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path

NODE_DIR = Path(__file__).with_name("node")  # the node side: user data and node program
USER_DATA_TEMPLATE = NODE_DIR / "user_data.sh"
# the node program: node.py and the modules it imports from its own folder, and the
# backends' shared modules it runs too (standard library only)
NODE_MODULES = ("node.py", "node_report.py", "node_daemons.py", "node_steps.py")
SHARED_MODULES = ("step_runner.py", "standalone.py", "executor_sizing.py")
HADOOP_AWS_PACKAGE = "org.apache.hadoop:hadoop-aws"

# where user_data.sh puts things on a node (run_steps_command relies on them)
NODE_HOME = "/opt/fruits"
NODE_PYTHON = f"{NODE_HOME}/venv/bin/python"
NODE_PROGRAM = f"{NODE_HOME}/code/node.py"
NODE_WORK_DIR = f"{NODE_HOME}/work"
NODE_USER = "spark"

USER_DATA_LIMIT = 16 * 1024  # EC2's limit on user data (before base64)
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
KEYS = frozenset(
    {
        "role",
        "cluster_id",
        "log_prefix",
        "code_prefix",
        "master_host",
        "workers",
        "ready_timeout",
        "lifetime_minutes",
        "hadoop_aws",
        "wheels_uri",
        "jars_uri",
        "python",
        "region",
        "node_home",
    }
)
ROLES = ("primary", "worker")
_UNSAFE = re.compile(r"['\n\r\x00]")
_VERSION = r"\d+(?:\.\d+)+(?:[-.][0-9A-Za-z]+)*"


def node_program() -> list[Path]:
    """The files of the node program, shipped side by side in the code bundle:
    :data:`NODE_MODULES` and the :data:`SHARED_MODULES` the local backend runs too."""
    common = Path(__file__).parents[1] / "common"
    return [*(NODE_DIR / n for n in NODE_MODULES), *(common / n for n in SHARED_MODULES)]


def render_user_data(values: Mapping[str, object]) -> str:
    """The user data script for one node: ``user_data.sh`` with every ``{{name}}`` replaced.

    ``KeyError`` names placeholders without a value, ``ValueError`` names unknown keys
    and values that are not safe inside single quotes (a ``'``, a line break) or do not
    fit (role, counts, the s3:// prefixes)."""
    values = {"node_home": NODE_HOME, **values}  # where the code puts things, not a choice
    template = USER_DATA_TEMPLATE.read_text()
    wanted = set(PLACEHOLDER.findall(template))
    missing = sorted(wanted - set(values))
    if missing:
        raise KeyError(f"user data: no value for {', '.join(missing)}")
    unknown = sorted(set(values) - wanted)
    if unknown:
        raise ValueError(f"user data: unknown placeholder(s) {', '.join(unknown)}")
    text = {name: _word(name, values[name]) for name in wanted}
    _check(text)
    rendered = PLACEHOLDER.sub(lambda m: text[m.group(1)], template)
    if "{{" in rendered:
        raise ValueError("user data: a value brings a '{{' into the script")
    size = len(rendered.encode())
    if size >= USER_DATA_LIMIT:
        raise ValueError(f"user data: {size} bytes, EC2 takes less than {USER_DATA_LIMIT}")
    return rendered


def _word(name: str, value: object) -> str:
    if value is None or isinstance(value, bool):
        raise ValueError(f"user data: {name}={value!r} is not a value for the script")
    text = str(value)
    if _UNSAFE.search(text):
        raise ValueError(
            f"user data: {name}={text!r} is not a safe shell word (no ' or line breaks)"
        )
    return text


def _check(text: Mapping[str, str]) -> None:
    """Values that would only fail on the instance, minutes later, fail here."""
    problems = []
    if text["role"] not in ROLES:
        problems.append(f"role={text['role']!r} (primary or worker)")
    for name, minimum in (("workers", 1), ("ready_timeout", 1), ("lifetime_minutes", 1)):
        if not text[name].isdigit() or int(text[name]) < minimum:
            problems.append(f"{name}={text[name]!r} (a whole number >= {minimum})")
    for name in ("log_prefix", "code_prefix"):
        if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]+/\S*/", text[name]):
            problems.append(f"{name}={text[name]!r} (an s3://bucket/prefix/ ending with /)")
    if not re.fullmatch(
        r"s3://[a-z0-9][a-z0-9.-]+/wheels/[0-9a-f]+/(x86_64|arm64)/", text["wheels_uri"]
    ):
        problems.append(f"wheels_uri={text['wheels_uri']!r} (s3://bucket/wheels/<hash>/<arch>/)")
    if text["jars_uri"] and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]+/\S*/", text["jars_uri"]):
        problems.append(f"jars_uri={text['jars_uri']!r} (empty, or an s3://bucket/folder/)")
    if text["role"] == "worker" and not re.fullmatch(r"[0-9A-Za-z.:-]+", text["master_host"]):
        problems.append(f"master_host={text['master_host']!r} (the primary's private IP)")
    if text["role"] == "primary" and text["master_host"]:
        problems.append(f"master_host={text['master_host']!r} (empty for the primary)")
    if not re.fullmatch(rf"(?:{re.escape(HADOOP_AWS_PACKAGE)}:)?{_VERSION}", text["hadoop_aws"]):
        problems.append(f"hadoop_aws={text['hadoop_aws']!r} (a version or {HADOOP_AWS_PACKAGE}:v)")
    for name, pattern in (
        ("python", r"python3(?:\.\d+)?"),
        ("region", r"[a-z]{2}(?:-[a-z]+)+-\d"),
        ("cluster_id", r"[0-9A-Za-z][0-9A-Za-z._-]*"),
        ("node_home", r"(/[0-9A-Za-z._-]+)+"),
    ):
        if not re.fullmatch(pattern, text[name]):
            problems.append(f"{name}={text[name]!r}")
    if problems:
        raise ValueError("user data: bad value(s): " + "; ".join(problems))


def run_steps_command(log_prefix: str) -> str:
    """The shell command (for ``AWS-RunShellScript`` on the primary) that starts
    ``node.py run-steps`` as the Spark user, detached: the SSM command returns at once,
    the runner mirrors its progress to ``<log_prefix>steps/``."""
    if not log_prefix.startswith("s3://") or not log_prefix.endswith("/"):
        raise ValueError(f"not an s3://.../ log prefix: {log_prefix!r}")
    argv = [NODE_PYTHON, NODE_PROGRAM, "run-steps", "--log-prefix", log_prefix,
            "--work-dir", f"{NODE_WORK_DIR}/steps"]  # fmt: skip
    return (
        f"cd / && setsid nohup runuser -u {NODE_USER} -- {shlex.join(argv)}"
        f" >>/var/log/fruits-steps.log 2>&1 </dev/null &"
    )
