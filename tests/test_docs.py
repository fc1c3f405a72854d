"""Every `dacbench_remote...` name the README and the docs use still imports, or is listed with
its replacement in docs/architecture.md ("Where modules used to be")."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NAME = re.compile(r"\bdacbench_remote(?:\.[A-Za-z_]\w*)+")
CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)


def _replaced_names() -> set[str]:
    """The old names in the first column of the table of moved modules."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Where modules used to be", 1)[1]
    old = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            old.update(NAME.findall(row.split("|")[1]))
    return old


def _documented_names() -> list[tuple[str, str]]:
    replaced = _replaced_names()
    found = {}
    for doc in DOCS:
        for block in CODE.findall(doc.read_text()):
            for name in NAME.findall(block):
                if name not in replaced:
                    found.setdefault(name, doc.relative_to(REPO).as_posix())
    return sorted(found.items())


def _resolve(name: str) -> object:
    """The module `name`, or the attribute it names inside the longest importable module."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            value = getattr(value, attribute)
        return value
    raise ModuleNotFoundError(name)


def test_the_docs_name_code_at_all():
    names = dict(_documented_names())
    assert "dacbench_remote.server" in names and "dacbench_remote.testing.assert_identical" in names


@pytest.mark.parametrize(("name", "doc"), _documented_names())
def test_a_name_in_the_docs_imports(name, doc):
    try:
        _resolve(name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{doc} names {name}, which does not import ({exc}); fix the doc or list the "
                    "name's replacement in docs/architecture.md")


def test_the_moved_names_are_gone_and_their_replacements_import():
    text = (REPO / "docs" / "architecture.md").read_text().split("## Where modules used to be", 1)[1]
    rows = [row.split("|") for row in text.splitlines() if row.startswith("| `")]
    assert len(rows) > 10
    for row in rows:
        for old in NAME.findall(row[1]):
            with pytest.raises((ImportError, AttributeError)):
                _resolve(old)
        for new in NAME.findall(row[2]):
            _resolve(new)
