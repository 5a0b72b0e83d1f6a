"""docs/deploy-aws.md stays true: every ``FRUITS_*`` variable it names is one the code
reads, every ``make`` target it names is in the Makefile, every stack parameter and
output it names is in infra/fruits-pipeline.yaml, and every relative link resolves.

A user follows this page against a real account that the project never had: a name
that drifted from the code is a failed deployment nobody here would see. Each check is
a function that returns what it found wrong, run on the page and on a page broken on
purpose."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.test_readme import broken_links, make_targets_named, makefile_targets, split_fences

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "deploy-aws.md"
STACK = ROOT / "infra" / "fruits-pipeline.yaml"

NAMED = re.compile(r"\bFRUITS_[A-Z0-9_]*\*?")
READ = re.compile(r"[\"'](FRUITS_[A-Z0-9_]*[A-Z0-9])[\"']")  # a whole name, quoted, in code
CELL = re.compile(r"^\|\s*`([A-Za-z0-9]+)`\s*\|")
NEAR_WORD = re.compile(r"`([A-Z][A-Za-z0-9]+)`\s+(parameter|output)s?\b|"
                       r"\b(parameter|output)s?\s+`([A-Z][A-Za-z0-9]+)`")  # fmt: skip
OVERRIDE = re.compile(r"\b([A-Z][A-Za-z0-9]+)=")
OUTPUT_KEY = re.compile(r"OutputKey==\s*'([A-Za-z0-9]+)'")


# --- settings --------------------------------------------------------------------------


def read_by_code() -> set[str]:
    """Every FRUITS_* name the plugins and the jobs read (a quoted string in Python), as
    tests/plugins/fruits/test_settings.py finds them."""
    names = set()
    for base in (ROOT / "plugins" / "fruits", ROOT / "spark_jobs"):
        for path in base.rglob("*.py"):
            names |= set(READ.findall(path.read_text()))
    return names


def unread_settings(text: str) -> list[str]:
    """Variables the page names that no code reads (``FRUITS_EMR_*``: one must start so)."""
    read = read_by_code()
    wrong = set()
    for name in NAMED.findall(text):
        if name.endswith("*"):
            if not any(r.startswith(name[:-1]) for r in read):
                wrong.add(name)
        elif name.rstrip("_") not in read:
            wrong.add(name)
    return sorted(wrong)


# --- make targets ----------------------------------------------------------------------


def unknown_targets(text: str) -> list[str]:
    return sorted(make_targets_named(text) - makefile_targets())


# --- the stack -------------------------------------------------------------------------


def stack_names() -> dict[str, set[str]]:
    """The template's parameters and outputs: the keys indented once under each section."""
    found: dict[str, set[str]] = {"parameter": set(), "output": set()}
    section = None
    for line in STACK.read_text().splitlines():
        if re.match(r"^[A-Za-z]", line):
            section = {"Parameters:": "parameter", "Outputs:": "output"}.get(line.strip())
        elif section and (key := re.match(r"^  ([A-Za-z0-9]+):", line)):
            found[section].add(key.group(1))
    return found


def stack_names_named(text: str) -> dict[str, set[str]]:
    """Parameters and outputs the page names: first cells of ``| parameter |`` and
    ``| output |`` tables, "`X` output" or "output `X`" in prose, ``--parameter-overrides
    X=...`` and ``OutputKey=='X'`` in commands."""
    prose, code = split_fences(text)
    named: dict[str, set[str]] = {"parameter": set(), "output": set()}
    kind = None
    for line in prose.splitlines():
        header = re.match(r"^\|\s*(parameter|output)\s*\|", line)
        if header:
            kind = header.group(1)
        elif not line.startswith("|"):
            kind = None
        elif kind and (cell := CELL.match(line)):
            named[kind].add(cell.group(1))
    for match in NEAR_WORD.finditer(prose):
        name, kind = (match.group(1), match.group(2)) if match.group(1) else match.group(4, 3)
        named[kind].add(name)
    for line in code.splitlines():
        if "--parameter-overrides" in line:
            named["parameter"] |= set(OVERRIDE.findall(line.split("--parameter-overrides")[1]))
    named["output"] |= set(OUTPUT_KEY.findall(code))
    return named


def unknown_stack_names(text: str) -> list[str]:
    real, named = stack_names(), stack_names_named(text)
    return sorted(f"{kind} {n}" for kind in named for n in named[kind] - real[kind])


# --- the tests -------------------------------------------------------------------------


def test_every_setting_the_page_names_is_read_by_the_code():
    named = set(NAMED.findall(PAGE.read_text()))
    assert {"FRUITS_COMPUTE", "FRUITS_EMR_SUBNET", "FRUITS_SOURCE_CONN_ID"} <= named
    assert unread_settings(PAGE.read_text()) == []


def test_every_make_target_the_page_names_is_in_the_makefile():
    named = make_targets_named(PAGE.read_text())
    assert {"stage-weights", "aws-smoke", "dist", "dist-check"} <= named
    assert unknown_targets(PAGE.read_text()) == []


def test_every_stack_parameter_and_output_the_page_names_is_in_the_template():
    real, named = stack_names(), stack_names_named(PAGE.read_text())
    assert {"BucketName", "AirflowRoleName", "VpcId"} <= real["parameter"]
    # the page maps every parameter and output to its setting
    assert named["parameter"] == real["parameter"] and named["output"] == real["output"]
    assert unknown_stack_names(PAGE.read_text()) == []


def test_every_relative_link_resolves():
    assert "(bundles.md)" in PAGE.read_text() and "../bundles/mwaa/README.md" in PAGE.read_text()
    assert broken_links(PAGE, PAGE.read_text()) == []


def test_the_page_says_nothing_ran_on_a_real_account():
    text = PAGE.read_text()
    assert "**Status: nothing has run on a real AWS account.**" in text
    assert "It has never run\non real AWS**" in text or "never run on real AWS" in text


BROKEN = """# Broken

| parameter | default |
|---|---|
| `BucketName` | - |
| `NoSuchParameter` | - |

Read the stack's `NoSuchOutput` output and output `BucketName`. Set `FRUITS_NO_SUCH`,
`FRUITS_EMR_*` and `FRUITS_NOWHERE_*`; run `make aws-smoke` and `make deploy`.
[gone](no-such-page.md), [here](#no-such-heading).

```bash
aws cloudformation deploy --parameter-overrides BucketName=b Missing=x
aws cloudformation describe-stacks --query "Stacks[0].Outputs[?OutputKey=='Gone'].OutputValue"
make stage-weights
```
"""


def test_each_check_catches_a_broken_page():
    assert unread_settings(BROKEN) == ["FRUITS_NOWHERE_*", "FRUITS_NO_SUCH"]
    assert unknown_targets(BROKEN) == ["deploy"]
    assert unknown_stack_names(BROKEN) == [
        "output Gone", "output NoSuchOutput", "parameter Missing", "parameter NoSuchParameter"
    ]  # fmt: skip
    assert broken_links(PAGE, BROKEN) == [
        "deploy-aws.md: no-such-page.md (no such file)",
        "deploy-aws.md: #no-such-heading (no such heading)",
    ]
