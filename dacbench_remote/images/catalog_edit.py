"""Minimal text edits of catalog files: pin a version's digests, keeping comments and layout.

A maintainer's diff must show exactly the values that changed, so edits are line edits checked
by parsing the result before it replaces the file.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import BadConfig
from .catalog import _SHA256, parse_catalog_file

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
    tmp = file.with_name(f".{file.name}.pin.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        family = parse_catalog_file(tmp)
        version = next(v for v in family.versions if v.experiment == experiment)
        if (version.sha256, version.inputs) != (sha256, inputs):
            raise BadConfig(f"{file}: editing the {experiment!r} table did not pin it "
                            f"(read back sha256={version.sha256!r}, inputs={version.inputs!r}); "
                            "set the values by hand")
        tmp.replace(file)
    finally:
        tmp.unlink(missing_ok=True)
