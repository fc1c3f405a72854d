"""Minimal text edits of catalog files: pin digests, add versions and sources, keeping comments.

A maintainer's diff must show exactly the values that changed, so edits are line edits checked
by parsing the result before it replaces the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from .._sys.files import atomic_output
from ..errors import BadConfig
from .catalog import _SHA256, ImageFamily, ImageVersion, parse_catalog_file

_TABLE_HEADER = re.compile(r"^\s*\[")
_EXPERIMENT_LINE = re.compile(r"""^\s*experiment\s*=\s*(["'])(?P<value>[^"']*)\1""")


def _key_line(key: str) -> re.Pattern[str]:
    # `key = "value"` or 'value', keeping whatever follows the value (alignment, a comment).
    return re.compile(rf"""^(?P<head>\s*{key}\s*=\s*)(["'])[^"']*\2(?P<tail>.*)$""")


def _version_block(lines: list[str], file: Path, experiment: str) -> tuple[int, int]:
    """The [start, end) line range of the [[versions]] table whose experiment is `experiment`."""
    starts = [i for i, line in enumerate(lines) if line.strip() == "[[versions]]"]
    for n, start in enumerate(starts):
        end = next((i for i in range(start + 1, len(lines)) if _TABLE_HEADER.match(lines[i])),
                   len(lines))
        end = min(end, starts[n + 1]) if n + 1 < len(starts) else end
        for line in lines[start:end]:
            found = _EXPERIMENT_LINE.match(line)
            if found and found.group("value") == experiment:
                return start, end
    raise BadConfig(
        f"{file}: no `[[versions]]` table with experiment = {experiment!r} written as a plain "
        "`experiment = \"...\"` line; set its sha256 and inputs by hand"
    )


def write_pin(file: Path, experiment: str, sha256: str, inputs: str) -> None:
    """Set `sha256` and `inputs` of one version in a catalog file, changing only those values.

    A minimal text edit (comments, order and layout stay), checked by parsing the result before
    it replaces the file, so a maintainer's diff shows exactly the two pinned values.
    """
    for key, value in (("sha256", sha256), ("inputs", inputs)):
        if not _SHA256.fullmatch(value):
            raise ValueError(f"{key} must be 64 lowercase hex digits, not {value!r}")
    text = file.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    start, end = _version_block(lines, file, experiment)
    sha_at = _replace_value(lines, start, end, "sha256", sha256)
    if sha_at is None:
        raise BadConfig(f"{file}: the {experiment!r} table has no `sha256 = \"...\"` line")
    if _replace_value(lines, start, end, "inputs", inputs) is None:
        indent = lines[sha_at][: len(lines[sha_at]) - len(lines[sha_at].lstrip())]
        lines.insert(sha_at + 1, f'{indent}inputs = "{inputs}"   # digest of recipe + %files '
                                 "the sha256 was built from\n")
    _replace_checked(file, "".join(lines), experiment, sha256, inputs)


def _replace_value(lines: list[str], start: int, end: int, key: str, value: str) -> int | None:
    pattern = _key_line(key)
    for i in range(start, end):
        newline = "\n" if lines[i].endswith("\n") else ""
        found = pattern.match(lines[i].rstrip("\n"))
        if found:
            lines[i] = f'{found.group("head")}"{value}"{found.group("tail")}{newline}'
            return i
    return None


def _replace_checked(file: Path, text: str, experiment: str, sha256: str, inputs: str) -> None:
    def pinned(version: ImageVersion) -> str:
        if (version.sha256, version.inputs) != (sha256, inputs):
            return (f"editing the {experiment!r} table did not pin it (read back "
                    f"sha256={version.sha256!r}, inputs={version.inputs!r}); set the values by hand")
        return ""

    _write_checked(file, text, experiment, pinned)


def _write_checked(file: Path, text: str, experiment: str,
                   problem: Callable[[ImageVersion], str]) -> None:
    """Replace `file` by `text` only if it parses and `problem` finds nothing in the version."""
    # perms 0o666: the umask decides, as for any file the user writes.
    with atomic_output(file, durable=False, perms=0o666) as tmp:
        tmp.write_text(text, encoding="utf-8")
        family = parse_catalog_file(tmp)
        version = next((v for v in family.versions if v.experiment == experiment), None)
        found = problem(version) if version else f"the edit lost the {experiment!r} table"
        if found:
            raise BadConfig(f"{file}: {found}")


def new_catalog_text(family: str, benchmarks: Sequence[str], recipe: str | None = None) -> str:
    """The head of a new catalog file; versions are appended with `add_version`."""
    if not family or not benchmarks:
        raise BadConfig("a new catalog file needs a family name and at least one benchmark "
                        "(the image labels org.dacbench-remote.family and "
                        "org.dacbench-remote.benchmarks, or write the file by hand)")
    lines = ["# Written by `dacbench-remote publish`; edit freely (see docs/catalog.md).\n",
             f"family = {json.dumps(family)}\n"]
    if recipe:
        lines.append(f"recipe = {json.dumps(recipe)}\n")
    lines.append(f"benchmarks = {json.dumps(list(benchmarks))}\n")
    return "".join(lines)


def add_version(file: Path, experiment: str, image: str, sha256: str,
                sources: Sequence[str] = (), dacbench: str = "") -> None:
    """Append a `[[versions]]` table to a catalog file, leaving the rest as it is."""
    text = file.read_text(encoding="utf-8")
    if any(v.experiment == experiment for v in parse_catalog_file(file).versions):
        raise BadConfig(f"{file}: {experiment!r} exists already; edit that version instead")
    table = ["[[versions]]\n", f"experiment = {json.dumps(experiment)}\n",
             f"image = {json.dumps(image)}\n", f"sha256 = {json.dumps(sha256)}\n",
             f"sources = {json.dumps(list(sources))}\n"]
    if dacbench:
        table.append(f"dacbench = {json.dumps(dacbench)}\n")
    spacer = "" if not text else "\n" if text.endswith("\n") else "\n\n"

    def written(version: ImageVersion) -> str:
        if version.sha256 != sha256 or version.image != image:
            return f"appending {experiment!r} did not read back; add it by hand"
        return ""

    _write_checked(file, text + spacer + "".join(table), experiment, written)


_SOURCES_ONE_LINE = re.compile(r"^(?P<head>\s*sources\s*=\s*\[)(?P<items>[^\]]*)\](?P<tail>.*)$")
_SOURCES_START = re.compile(r"^\s*sources\s*=\s*\[")


def add_source(file: Path, experiment: str, source: str, sha256: str = "") -> None:
    """Add `source` to a version's `sources` (if new); set its sha256 if it has none yet.

    A set sha256 that differs is refused: an experiment id names one image forever.
    """
    lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
    start, end = _version_block(lines, file, experiment)
    version = _version(file, experiment)
    if sha256 and version.sha256 and version.sha256 != sha256:
        raise digest_conflict(file, experiment, version.sha256, sha256)
    if sha256 and not version.sha256 and _replace_value(lines, start, end, "sha256", sha256) \
            is None:
        raise BadConfig(f"{file}: the {experiment!r} table has no `sha256 = \"...\"` line")
    if source not in version.sources:
        _insert_source(lines, start, end, source)

    def added(read: ImageVersion) -> str:
        if source not in read.sources or (sha256 and read.sha256 != sha256):
            return f"adding {source} to {experiment!r} did not read back; add it by hand"
        return ""

    _write_checked(file, "".join(lines), experiment, added)


def _insert_source(lines: list[str], start: int, end: int, source: str) -> None:
    item = json.dumps(source)
    for i in range(start, end):
        newline = "\n" if lines[i].endswith("\n") else ""
        one = _SOURCES_ONE_LINE.match(lines[i].rstrip("\n"))
        if one:
            items = one.group("items").strip().rstrip(",")
            joined = f"{items}, {item}" if items else item
            lines[i] = f'{one.group("head")}{joined}]{one.group("tail")}{newline}'
            return
        if _SOURCES_START.match(lines[i]):  # a multi-line array: add a line before its `]`
            close = next(j for j in range(i + 1, end) if lines[j].lstrip().startswith("]"))
            last = lines[close - 1].rstrip("\n")
            if close - 1 > i and not last.split("#", 1)[0].rstrip().endswith(","):
                lines[close - 1] = last.split("#", 1)[0].rstrip() + "," + \
                    ("  #" + last.split("#", 1)[1] if "#" in last else "") + "\n"
            indent = re.match(r"\s*", lines[close - 1] if close - 1 > i else "    ").group()
            lines.insert(close, f"{indent or '    '}{item},\n")
            return
    at = max(i for i in range(start, end) if lines[i].strip()) + 1
    lines.insert(at, f"sources = [{item}]\n")


def _version(file: Path, experiment: str) -> ImageVersion:
    family = parse_catalog_file(file)
    return next(v for v in family.versions if v.experiment == experiment)


def digest_conflict(file: Path, experiment: str, pinned: str, new: str) -> BadConfig:
    """The refusal to re-point an experiment id at other bytes, saying what to do instead."""
    return BadConfig(
        f"{file}: {experiment} is pinned to sha256 {pinned}, but this image has sha256 {new}. "
        "An experiment id names one image forever (results record it); publish this image "
        "under a new experiment id, e.g. --experiment exp:NEXT")


def check_publishable(file: Path, experiment: str, sha256: str) -> ImageFamily | None:
    """Raise digest_conflict before anything is pushed; the parsed family (None: no file yet)."""
    if not file.exists():
        return None
    family = parse_catalog_file(file)
    for version in family.versions:
        if version.experiment == experiment and version.sha256 and version.sha256 != sha256:
            raise digest_conflict(file, experiment, version.sha256, sha256)
    return family
