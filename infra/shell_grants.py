"""What the nodes' shell scripts ask of S3: their ``aws s3`` commands, the prefixes the
URIs in their variables name (:data:`SHELL_URIS`), and the action each takes there."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

from infra.aws_actions import AWS_S3_CLI
from infra.code_grants import S3_URI, Found

# Shell variables of the nodes' scripts that hold s3:// URIs -> the prefix they name
# (bootstrap.sh's $1 is the job flow's {{requirements}}; user_data.sh's placeholders are
# the ec2 request's code_prefix and log_prefix).
SHELL_URIS = {"REQUIREMENTS_URI": "code/", "CODE_PREFIX": "code/", "LOG_PREFIX": "logs/ec2/",
              # the staged wheels (bootstrap.sh's $3, user data's wheels_uri), and
              # FRUITS_EC2_JARS_URI, granted under the bucket's jars/ (docs/deploy-aws.md)
              "WHEELS_URI": "wheels/", "JARS_URI": "jars/",
              # the ec2 cluster's spark.authenticate secret, under its log prefix
              "SECRET_URI": "logs/ec2/"}  # fmt: skip

# -- shell -------------------------------------------------------------------------------


def _shell_commands(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line, words) of every ``aws s3 ...`` command, continuation lines joined."""
    joined, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if not joined:
            start = number
        joined += line.rstrip("\\") + " "
        if line.rstrip().endswith("\\"):
            continue
        code = joined.split(" #", 1)[0]
        joined = ""
        match = re.search(r"\baws\s+s3\s+.*", code)
        if match:
            words = shlex.split(match.group(0).split("|", 1)[0], comments=True)
            yield start, words


_CLI_VALUED = frozenset({"--region", "--content-type", "--profile", "--endpoint-url", "--sse"})


def scan_shell(text: str, where: str) -> Found:
    """The actions and prefixes of ``aws s3`` commands in a shell script."""
    found = Found()
    for line, words in _shell_commands(text):
        command, rest = words[2], words[3:]
        call = f"{where}:{line} aws s3 {command}"
        if command not in AWS_S3_CLI:
            found.unmapped.append(f"{call} (not in aws_actions.AWS_S3_CLI)")
            continue
        operands, skip = [], False
        for word in rest:
            if skip:
                skip = False
            elif word in _CLI_VALUED:
                skip = True
            elif not word.startswith("--"):
                operands.append(word)
        reads, writes = AWS_S3_CLI[command]
        prefixes = [_shell_prefix(operand) for operand in operands]
        for i, (operand, prefix) in enumerate(zip(operands, prefixes, strict=True)):
            if prefix is None:
                continue  # a local path or stdin
            if prefix == "":
                if any(prefixes[:i] + prefixes[i + 1 :]):
                    continue  # the other side is S3: a local path in a variable
                found.unmapped.append(f"{call}: {operand} (a variable not in SHELL_URIS)")
                continue
            actions = [*(reads if i == 0 else writes)]
            actions += ["s3:ListBucket"] if "--recursive" in rest else []
            found.prefixes.setdefault(prefix, call)
            found.add(actions, call)
            for action in actions:
                found.linked.setdefault((prefix, action), call)
    return found


def _shell_prefix(operand: str) -> str | None:
    """The prefix an operand names; '' for an unknown variable; None for a local path."""
    var = re.match(r"^\$\{?(\w+)", operand)
    if var:
        return SHELL_URIS.get(var.group(1), "")
    uri = S3_URI.match(operand)
    return uri.group(1) if uri else None
