"""Reads the subset of Apptainer definition files (.def) our builder can build, or says exactly why not.

The same file must build with `apptainer build` on a cluster and with our builder here, so
anything we cannot reproduce faithfully is an error naming the file, the line and the feature.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import RecipeError

SUPPORTED_HEADER_KEYS = {"bootstrap": "Bootstrap", "osversion": "OSVersion",
                         "mirrorurl": "MirrorURL", "include": "Include"}
SUPPORTED_SECTIONS = ("arguments", "files", "post", "environment", "runscript", "labels",
                      "help", "test")
# Sections Apptainer knows that our builder cannot reproduce (host-side scriptlets, SCIF apps).
KNOWN_UNSUPPORTED_SECTIONS = ("setup", "pre", "startscript", "appinstall", "appfiles", "apprun",
                              "appenv", "applabels", "apphelp", "apptest", "appstart")
SUPPORTED_BOOTSTRAP = "debootstrap"

_SECTION_RE = re.compile(r"^%([A-Za-z]\w*)(.*)$")
# Apptainer's templating (internal/pkg/build/args/reader.go): `{{ name }}` with an ASCII word as
# name, skipped where the text before it on its line holds a `#` followed by a character other
# than `!` (a comment; a shebang is not one). Go's regexp.Match searches, it does not anchor.
_TEMPLATE_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}", re.ASCII)
_COMMENT_RE = re.compile(r"\s*[#][^!]\s*.*")
_VAR_NAME_RE = re.compile(r"^[A-Za-z_]\w*$")


@dataclass(frozen=True)
class FileCopy:
    """One `%files` line: a host path (relative to the build context) and where it goes."""

    source: str
    destination: str
    line: int


@dataclass(frozen=True)
class Recipe:
    """A parsed, templated definition file; `text` is the original, as stored in the image."""

    path: Path
    text: str
    header: dict[str, str]
    arguments: dict[str, str]
    variables: dict[str, str]
    files: tuple[FileCopy, ...] = ()
    post: str = ""
    environment: str = ""
    runscript: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    help: str = ""
    test: str = ""
    unused_build_args: tuple[str, ...] = ()

    @property
    def bootstrap(self) -> str:
        return self.header["Bootstrap"]

    @property
    def os_version(self) -> str:
        return self.header["OSVersion"]

    @property
    def mirror_url(self) -> str:
        return self.header["MirrorURL"]

    @property
    def include(self) -> list[str]:
        """Extra Debian packages for the bootstrap (Apptainer accepts commas and/or spaces)."""
        return [p for p in re.split(r"[,\s]+", self.header.get("Include", "")) if p]


def template_variables(path: Path, text: str | None = None) -> set[str]:
    """Names used as `{{ name }}` outside comments, so a builder can supply defaults (`mirror`)."""
    text = path.read_text() if text is None else text
    return {match.group(1) for match, comment in _template_matches(text) if not comment}


def has_commented_templates(text: str) -> bool:
    """True if a `{{ name }}` sits in a comment, where Apptainer >= 1.3 leaves it (1.2 did not)."""
    return any(comment for _, comment in _template_matches(text))


def _template_matches(text: str) -> Iterator[tuple[re.Match, bool]]:
    """Each `{{ name }}` and whether Apptainer skips it as part of a comment line.

    As reader.go: the text checked for a comment runs from the last newline before the match,
    but not back past the end of the last match that was substituted.
    """
    substituted_end = 0
    for match in _TEMPLATE_RE.finditer(text):
        newline = text.rfind("\n", substituted_end, match.start() + 1)
        segment = text[newline if newline >= 0 else substituted_end:match.start()]
        comment = _COMMENT_RE.search(segment) is not None
        if not comment:
            substituted_end = match.end()
        yield match, comment


@dataclass(frozen=True)
class Templated:
    """A recipe's text after templating, and the build arguments nothing used."""

    text: str
    unused_build_args: tuple[str, ...]


def apply_templates(text: str, path: Path | str, defaults: dict[str, str],
                    build_args: dict[str, str]) -> Templated:
    """Replace `{{ name }}` as `apptainer build` does (args/reader.go), raising RecipeError for
    an undefined name.

    A build argument wins over the %arguments default; a value may itself name other arguments
    (replaced once, left as written if undefined). Only names replaced directly count as used:
    Apptainer's fatal "unused build args" check counts the same way.
    """
    pieces, used, position = [], set(), 0
    for match, comment in _template_matches(text):
        if comment:
            continue
        name = match.group(1)
        value = build_args.get(name, defaults.get(name))
        if value is None:
            line = text.count("\n", 0, match.start()) + 1
            raise RecipeError(
                f"{path}:{line}: template variable {{{{ {name} }}}} is defined neither in "
                f"%arguments nor by a build argument (pass --build-arg {name}=VALUE)")
        pieces += [text[position:match.start()], _nested(value, defaults, build_args)]
        used.add(name)
        position = match.end()
    pieces.append(text[position:])
    return Templated("".join(pieces), tuple(sorted(set(build_args) - used)))


def _nested(value: str, defaults: dict[str, str], build_args: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        name = match.group(1)
        return build_args.get(name, defaults.get(name, match.group(0)))

    return _TEMPLATE_RE.sub(replace, value)


def parse_recipe(path: Path | str, build_args: dict[str, str] | None = None) -> Recipe:
    """Parse and template the definition file at `path`; raise RecipeError naming file:line."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc}") from exc
    return parse_recipe_text(text, path, build_args)


def parse_recipe_text(text: str, path: Path | str,
                      build_args: dict[str, str] | None = None) -> Recipe:
    """Parse recipe `text` (read from `path`, used in messages) with `build_args` applied."""
    path = Path(path)
    build_args = dict(build_args or {})
    for name, value in build_args.items():
        if not _VAR_NAME_RE.match(name):
            raise RecipeError(f"{path}: build argument name {name!r} is not a valid identifier")
        if "\n" in value:
            raise RecipeError(f"{path}: build argument {name!r} contains a newline")
    arguments = _parse_arguments(path, text.splitlines())
    templated = apply_templates(text, path, arguments, build_args)
    header, sections = _split(path, templated.text.splitlines())
    recipe = _build(path, text, header, sections, arguments, {**arguments, **build_args})
    return replace(recipe, unused_build_args=templated.unused_build_args)


def _section_header(path: Path, number: int, line: str) -> str | None:
    """The section name if `line` opens a section, after checking we support it."""
    match = _SECTION_RE.match(line)
    if match is None:
        if line.startswith("%"):
            raise RecipeError(f"{path}:{number}: malformed section line {line.strip()!r}")
        return None
    name, rest = match.group(1).lower(), match.group(2).strip()
    if name in KNOWN_UNSUPPORTED_SECTIONS:
        raise RecipeError(
            f"{path}:{number}: section %{name} is not supported by dacbench-remote's builder "
            "(build this recipe with Apptainer, or move the steps into %post)")
    if name not in SUPPORTED_SECTIONS:
        raise RecipeError(f"{path}:{number}: unknown section %{name}")
    if rest:
        raise RecipeError(
            f"{path}:{number}: section options ({line.strip()!r}) are not supported by "
            "dacbench-remote's builder; write the section without options")
    return name


def apptainer_argument_defaults(text: str) -> dict[str, str]:
    """The `%arguments` defaults as `apptainer build` reads them (args.ReadDefaults): NAME=VALUE
    lines of any stage, other lines skipped; for recipes only Apptainer builds (no checks)."""
    defaults: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("%"):
            current = line[1:].split(maxsplit=1)[0].lower() if line[1:].strip() else ""
            continue
        stripped = line.strip()
        if current == "arguments" and stripped and not stripped.startswith("#"):
            name, sep, value = stripped.partition("=")
            if sep and name.strip():
                defaults[name.strip()] = value.strip()
    return defaults


def _parse_arguments(path: Path, lines: list[str]) -> dict[str, str]:
    """The `%arguments` defaults, read before templating (they feed it)."""
    arguments: dict[str, str] = {}
    current = None
    for number, line in enumerate(lines, start=1):
        if line.startswith("%"):
            current = _section_header(path, number, line)
            continue
        if current != "arguments" or not line.strip() or line.strip().startswith("#"):
            continue
        name, sep, value = line.strip().partition("=")
        name = name.strip()
        if not sep or not _VAR_NAME_RE.match(name):
            raise RecipeError(f"{path}:{number}: %arguments lines must be NAME=VALUE, "
                              f"got {line.strip()!r}")
        if name in arguments:
            raise RecipeError(f"{path}:{number}: argument {name!r} is defined twice")
        arguments[name] = value.strip()
    return arguments


def _split(path: Path, lines: list[str]) -> tuple[dict[str, tuple[int, str]],
                                                  dict[str, list[tuple[int, str]]]]:
    """Header key/values (with line numbers) and each section's numbered body lines."""
    header: dict[str, tuple[int, str]] = {}
    sections: dict[str, list[tuple[int, str]]] = {}
    section_lines: dict[str, int] = {}
    current = None
    for number, line in enumerate(lines, start=1):
        if line.startswith("%"):
            current = _section_header(path, number, line)
            if current in sections:
                raise RecipeError(f"{path}:{number}: section %{current} appears twice "
                                  f"(first at line {section_lines[current]})")
            sections[current] = []
            section_lines[current] = number
            continue
        if current is not None:
            sections[current].append((number, line))
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition(":")
        if not sep or not key.strip() or " " in key.strip():
            raise RecipeError(f"{path}:{number}: expected a header line 'Key: value' "
                              f"before the first section, got {stripped!r}")
        canonical = SUPPORTED_HEADER_KEYS.get(key.strip().lower())
        if canonical is None:
            raise RecipeError(
                f"{path}:{number}: header key {key.strip()!r} is not supported by "
                f"dacbench-remote's builder (supported: {', '.join(SUPPORTED_HEADER_KEYS.values())})")
        if canonical in header:
            if canonical == "Bootstrap":
                raise RecipeError(f"{path}:{number}: multi-stage recipes (a second Bootstrap:) "
                                  "are not supported by dacbench-remote's builder")
            raise RecipeError(f"{path}:{number}: header key {canonical} appears twice")
        header[canonical] = (number, value.strip())
    return header, sections


def _body(lines: list[tuple[int, str]]) -> str:
    """A script/text section as Apptainer keeps it: the lines, without surrounding blank lines."""
    return "\n".join(line for _, line in lines).strip("\n")


def _build(path: Path, text: str, header: dict[str, tuple[int, str]],
           sections: dict[str, list[tuple[int, str]]], arguments: dict[str, str],
           variables: dict[str, str]) -> Recipe:
    if "Bootstrap" not in header:
        raise RecipeError(f"{path}:1: missing 'Bootstrap: {SUPPORTED_BOOTSTRAP}' header")
    line, bootstrap = header["Bootstrap"]
    if bootstrap != SUPPORTED_BOOTSTRAP:
        raise RecipeError(
            f"{path}:{line}: Bootstrap: {bootstrap} is not supported by dacbench-remote's builder "
            f"(only '{SUPPORTED_BOOTSTRAP}'; build this recipe with Apptainer instead)")
    for key in ("OSVersion", "MirrorURL"):
        if not header.get(key, (0, ""))[1]:
            raise RecipeError(f"{path}:{line}: Bootstrap: debootstrap needs a non-empty {key} "
                              "header")
    return Recipe(
        path=path, text=text,
        header={key: value for key, (_, value) in header.items()},
        arguments=arguments, variables=variables,
        files=tuple(_parse_files(path, sections.get("files", []))),
        post=_body(sections.get("post", [])),
        environment=_body(sections.get("environment", [])),
        runscript=_body(sections.get("runscript", [])),
        labels=_parse_labels(path, sections.get("labels", [])),
        help=_body(sections.get("help", [])),
        test=_body(sections.get("test", [])),
    )


def _parse_files(path: Path, lines: list[tuple[int, str]]) -> list[FileCopy]:
    copies = []
    for number, line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            words = shlex.split(stripped)
        except ValueError as exc:
            raise RecipeError(f"{path}:{number}: cannot split %files line: {exc}") from exc
        if len(words) > 2:
            raise RecipeError(f"{path}:{number}: %files lines are 'SOURCE [DESTINATION]', "
                              f"got {len(words)} words")
        if any(ch in words[0] for ch in "*?["):
            raise RecipeError(f"{path}:{number}: wildcards in %files sources are not supported "
                              "by dacbench-remote's builder; list each path")
        destination = words[1] if len(words) == 2 else words[0]
        if not destination.startswith("/"):
            destination = "/" + destination
        if ".." in Path(destination).parts:
            raise RecipeError(f"{path}:{number}: %files destination {destination!r} must not "
                              "contain '..'")
        copies.append(FileCopy(words[0], destination, number))
    return copies


def _parse_labels(path: Path, lines: list[tuple[int, str]]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for number, line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, _, value = stripped.partition(" ")
        if key in labels:
            raise RecipeError(f"{path}:{number}: label {key!r} is defined twice")
        labels[key] = value.strip()
    return labels
