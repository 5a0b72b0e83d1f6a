"""The README stays true: it is short, and every ``make`` target, repository path, setting
and docs link it names exists. ``docs/configuration.md`` is the settings' reference: its
tables (``| variable | default | meaning |``) list each ``FRUITS_*`` variable once.

Each check is a function that returns what it found wrong, run on the real files and,
in ``test_each_check_catches_a_broken_readme``, on a README broken on purpose."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
MAX_LINES = 200

# What a path in the README may start with to count as a repository path.
REPO_DIRS = ("bench/", "dags/", "docs/", "infra/", "plugins/", "requirements/", "scripts/",
             "spark_jobs/", "tests/")  # fmt: skip
ROOT_FILES = ("Dockerfile", "Makefile", "README.md", "constraints.txt", "docker-compose.yaml",
              "pyproject.toml")  # fmt: skip
# Made at run time (and git-ignored): named in the README, absent from a fresh clone.
GENERATED = ("var/", "data/", "build/", "tests/artifacts/", "bench/results.json")
# Set by the ec2 nodes' user data for their own program: not settings, not documented.
INTERNAL_SETTINGS = {"FRUITS_ROLE", "FRUITS_INSTANCE", "FRUITS_ERROR", "FRUITS_NODE_LOG"}

HEADER = "| variable | default | meaning |"
ROW = re.compile(r"^\|\s*`(FRUITS_[A-Z0-9_]+)`\s*\|\s*(`[^`]+`|all cores|empty)\s*\|.+\|\s*$")
SETTING = re.compile(r"\bFRUITS_[A-Z0-9_]*\*?")
SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
MAKE_IN_SPAN = re.compile(r"(?<![\w.-])make ([a-z][a-z-]*)")
MAKE_IN_CODE = re.compile(r"^\s*(?:\$\s+)?(?:[A-Z_]+=\S*\s+)*make ([a-z][a-z-]*)", re.M)
TARGET = re.compile(r"^([a-z][a-z-]*):", re.M)


def split_fences(text: str) -> tuple[str, str]:
    """(prose, code): the text outside fenced code blocks and the text inside them, each
    keeping the other's lines as blank lines."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            prose.append("")
            code.append("")
        elif fenced:
            prose.append("")
            code.append(line)
        else:
            prose.append(line)
            code.append("")
    return "\n".join(prose), "\n".join(code)


# --- (a) length ----------------------------------------------------------------------


def too_long(text: str) -> list[str]:
    n = len(text.splitlines())
    return [f"{n} lines, more than {MAX_LINES}"] if n > MAX_LINES else []


# --- (b) make targets ----------------------------------------------------------------


def makefile_targets() -> set[str]:
    return set(TARGET.findall((ROOT / "Makefile").read_text()))


def make_targets_named(text: str) -> set[str]:
    """``make <target>`` in code spans and at the start of command lines in code blocks."""
    prose, code = split_fences(text)
    named = set(MAKE_IN_CODE.findall(code))
    for span in SPAN.findall(prose):
        named.update(MAKE_IN_SPAN.findall(span))
    return named


def unknown_targets(text: str) -> list[str]:
    return sorted(make_targets_named(text) - makefile_targets())


# --- (c) repository paths ------------------------------------------------------------


def repo_paths(text: str) -> set[str]:
    """Repository paths named in code spans or as link targets, outside code blocks;
    placeholders (``<date>``), globs and what runs make (``var/``, ``data/``) left out."""
    prose, _ = split_fences(text)
    words = [w for span in SPAN.findall(prose) for w in span.split()]
    words += [target.split("#", 1)[0] for target in LINK.findall(prose)]
    paths = set()
    for word in words:
        word = word.strip("'\"").lstrip("(").rstrip(",;:)").split("::", 1)[0]
        if not (word.startswith(REPO_DIRS) or word in ROOT_FILES):
            continue
        if any(c in word for c in "<>*?{}") or word.startswith(GENERATED):
            continue
        paths.add(word)
    return paths


def missing_paths(text: str) -> list[str]:
    return sorted(p for p in repo_paths(text) if not (ROOT / p).exists())


# --- (d) settings --------------------------------------------------------------------


def config_rows(text: str) -> tuple[list[str], list[str]]:
    """(variables, bad rows) of every ``| variable | default | meaning |`` table."""
    names, bad, in_table = [], [], False
    for line in text.splitlines():
        if line.strip() == HEADER:
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith("|"):
            in_table = False
        elif not re.fullmatch(r"\|(\s*-+\s*\|)+", line.strip()):
            row = ROW.match(line)
            if row:
                names.append(row.group(1))
            else:
                bad.append(line)
    return names, bad


def documented_settings() -> set[str]:
    return set(config_rows(CONFIGURATION.read_text())[0])


def settings_named(text: str) -> set[str]:
    return set(SETTING.findall(text))


def undocumented(text: str) -> list[str]:
    """Settings named in ``text`` that docs/configuration.md lacks; ``FRUITS_EMR_*`` needs
    at least one documented variable with that prefix."""
    documented = documented_settings()
    wrong = []
    for name in settings_named(text):
        if name.endswith("*"):
            if not any(d.startswith(name[:-1]) for d in documented):
                wrong.append(name)
        elif name.rstrip("_") not in documented:
            wrong.append(name)
    return sorted(wrong)


# --- (e) links -----------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_fences(path.read_text())
    seen: dict[str, int] = {}
    found = set()
    for line in prose.splitlines():
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(path: Path, text: str) -> list[str]:
    """Relative links in ``text`` (a file at ``path``) whose file or heading is missing."""
    prose, _ = split_fences(text)
    wrong = []
    for target in LINK.findall(prose):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            wrong.append(f"{path.name}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            wrong.append(f"{path.name}: {target} (no such heading)")
    return wrong


# --- the tests -----------------------------------------------------------------------


def test_readme_is_at_most_200_lines():
    assert too_long(README.read_text()) == []


def test_every_make_target_the_readme_names_is_in_the_makefile():
    named = make_targets_named(README.read_text())
    assert {"demo", "test", "check", "ui", "bench"} <= named  # the parser sees them
    assert unknown_targets(README.read_text()) == []


def test_every_repository_path_the_readme_names_exists():
    paths = repo_paths(README.read_text())
    assert {"docs/configuration.md", "infra/fruits-pipeline.yaml"} <= paths
    assert missing_paths(README.read_text()) == []


def test_every_setting_the_readme_names_is_in_the_configuration_page():
    assert "FRUITS_COMPUTE" in settings_named(README.read_text())
    assert undocumented(README.read_text()) == []


def test_the_configuration_tables_list_each_variable_once():
    names, bad = config_rows(CONFIGURATION.read_text())
    assert bad == []
    assert len(names) > 40  # every table was read
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
    assert INTERNAL_SETTINGS.isdisjoint(names)


def test_every_docs_link_resolves():
    pages = [README, *sorted(DOCS.glob("*.md"))]
    assert DOCS / "configuration.md" in pages
    assert [w for page in pages for w in broken_links(page, page.read_text())] == []


BROKEN = """# A broken README

```bash
make demo
```

Run `make deploy`, then read `plugins/fruits/no_such_module.py`,
[a page](docs/no-such-page.md) and [a part](docs/configuration.md#no-such-heading).
Set `FRUITS_NO_SUCH_SETTING` or `FRUITS_NOWHERE_*`; `FRUITS_COMPUTE` is fine.
"""


def test_each_check_catches_a_broken_readme():
    assert too_long("line\n" * (MAX_LINES + 1)) == [f"{MAX_LINES + 1} lines, more than 200"]
    assert too_long("line\n" * MAX_LINES) == []
    assert make_targets_named(BROKEN) == {"demo", "deploy"}
    assert unknown_targets(BROKEN) == ["deploy"]
    assert missing_paths(BROKEN) == ["docs/no-such-page.md", "plugins/fruits/no_such_module.py"]
    assert undocumented(BROKEN) == ["FRUITS_NOWHERE_*", "FRUITS_NO_SUCH_SETTING"]
    assert broken_links(README, BROKEN) == [
        "README.md: docs/no-such-page.md (no such file)",
        "README.md: docs/configuration.md#no-such-heading (no such heading)",
    ]


def test_a_malformed_or_repeated_configuration_row_is_caught():
    table = "\n".join([
        HEADER,
        "|---|---|---|",
        "| `FRUITS_A` | `1` | fine |",
        "| `FRUITS_B` | all cores | fine |",
        "| `FRUITS_C` | empty | fine |",
        "| `FRUITS_A` | `2` | repeated |",
        "| FRUITS_D | `1` | no backticks |",
        "| `FRUITS_E` | 1 | a default without backticks |",
        "",
        "| `FRUITS_F` | `1` | outside any table |",
    ])  # fmt: skip
    names, bad = config_rows(table)
    assert names == ["FRUITS_A", "FRUITS_B", "FRUITS_C", "FRUITS_A"]
    assert bad == ["| FRUITS_D | `1` | no backticks |",
                   "| `FRUITS_E` | 1 | a default without backticks |"]  # fmt: skip


def test_anchors_follow_github():
    assert slug("What comes out: `report.json` and the plots") == (
        "what-comes-out-reportjson-and-the-plots"
    )
    assert slug("3. Amazon EMR") == "3-amazon-emr"
    assert slug("Drivers and daemons on C1 alone (2026-12-02, night)") == (
        "drivers-and-daemons-on-c1-alone-2026-12-02-night"
    )
