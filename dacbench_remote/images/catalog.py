"""The catalog: which image (file, sha256, sources, recipe) serves a benchmark at an experiment id.

One TOML file per image family (`benchmarks/*.toml`). Catalog directories load in order (the
packaged one first, then the user's); a later file for the same family overrides its fields and
adds or replaces versions by experiment id, and a later family wins for a benchmark it also serves.
A family of `kind = "agent"` holds agents instead (RL algorithms, e.g. Stable-Baselines3's PPO,
listed under `agents`): the same images, versions and pins, looked up by agent name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import read_toml
from ..errors import BadConfig, ImageNotFound, UnknownBenchmark

REMOTE_SCHEMES = ("https://", "http://", "oras://", "library://", "docker://")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FAMILY_KEYS = {"family", "kind", "recipe", "benchmarks", "agents", "versions", "description",
                "wheelhouse"}
_VERSION_KEYS = {"experiment", "image", "sha256", "inputs", "sources", "default", "dacbench",
                 "description", "recipe", "wheelhouse"}
# What a family's images serve: benchmarks (a server of envs) or agents (trainers of policies).
KINDS = ("benchmark", "agent")


def packaged_root() -> Path:
    """The directory holding the packaged `benchmarks/` and `recipes/`.

    In a source checkout (or editable install) that is the repository root, the source of truth.
    A non-editable install has no repository, so the wheel carries a copy under
    `dacbench_remote/images/packaged/` (symlinks in the source tree, real files once built).
    """
    package = Path(__file__).resolve().parent.parent
    repo = package.parent
    pyproject = repo / "pyproject.toml"
    # Only our own checkout counts: site-packages/benchmarks could belong to anyone.
    is_checkout = pyproject.is_file() and 'name = "dacbench-remote"' in pyproject.read_text(
        encoding="utf-8"
    )
    if is_checkout and (repo / "benchmarks").is_dir():
        return repo
    installed = Path(__file__).resolve().parent / "packaged"
    if (installed / "benchmarks").is_dir():
        return installed
    raise BadConfig(
        f"the packaged catalog is missing: neither {repo / 'benchmarks'} nor "
        f"{installed / 'benchmarks'} exists; reinstall dacbench-remote"
    )


def packaged_catalog_dir() -> Path:
    """The packaged catalog directory (`benchmarks/`)."""
    return packaged_root() / "benchmarks"


def benchmark_key(name: str) -> str:
    """Normalise a benchmark name so `Luby`, `LubyBenchmark`, `luby` and a class path all match."""
    key = name.strip().rsplit(".", 1)[-1].lower().replace("-", "").replace("_", "")
    if key.endswith("benchmark") and len(key) > len("benchmark"):
        key = key[: -len("benchmark")]
    return key


@dataclass(frozen=True)
class ImageVersion:
    """One image of a family, named by its experiment id: pinned by its sha256 (downloadable from
    its sources, or reproducible from its recipe), or without a pin (built locally)."""

    experiment: str
    image: str
    sha256: str
    sources: tuple[str, ...]
    default: bool
    dacbench: str
    catalog_file: Path
    inputs: str = ""  # inputs_digest of recipe + %files the sha256 was built from; "" = unknown
    # This version's own recipe (an experiment version pinning other dependencies); None = the
    # family's recipe.
    recipe: Path | None = None
    # Wheelhouse directories its build installs from first (with the family's, after them).
    wheelhouse: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ImageFamily:
    """Images built from one recipe, serving a set of benchmarks (or, of kind "agent", a set of
    agents); versions listed oldest first."""

    name: str
    recipe: Path | None
    benchmarks: tuple[str, ...]
    versions: tuple[ImageVersion, ...]
    files: tuple[Path, ...] = field(default=())
    kind: str = "benchmark"
    agents: tuple[str, ...] = ()
    wheelhouse: tuple[Path, ...] = ()

    @property
    def served(self) -> tuple[str, ...]:
        """What its images serve: the benchmarks, or for an agent family the agents."""
        return self.agents if self.kind == "agent" else self.benchmarks


@dataclass(frozen=True)
class ResolvedImage:
    """Everything needed to obtain, verify and record one image for one benchmark."""

    benchmark: str
    family: str
    experiment: str
    image: str
    sha256: str  # "" means: no pinned image, only a local build can provide it
    sources: tuple[str, ...]
    recipe: Path | None
    dacbench: str
    default: bool
    catalog_file: Path
    inputs: str = ""  # inputs digest the pinned sha256 was built from ("" = not recorded)
    kind: str = "benchmark"  # "agent": `benchmark` names the agent (e.g. PPO) the image trains
    wheelhouse: tuple[Path, ...] = ()  # what a build of it installs from first

    @property
    def pinned(self) -> bool:
        """True if the catalog pins a digest: a download or a build is verified against it."""
        return bool(self.sha256)

    def provenance(self) -> dict[str, Any]:
        """The catalog facts a results file should record to repeat this run exactly."""
        if self.kind == "agent":
            return {"agent": self.benchmark, "family": self.family, "experiment": self.experiment,
                    "image": self.image, "catalog_sha256": self.sha256}
        return {
            "benchmark": self.benchmark,
            "family": self.family,
            "experiment": self.experiment,
            "image": self.image,
            "catalog_sha256": self.sha256,
            "dacbench": self.dacbench,
        }


def _where(file: Path, key: str) -> str:
    return f"{file}: `{key}`"


def _string(file: Path, key: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise BadConfig(f"{_where(file, key)} must be a non-empty string, got {value!r}")
    return value


def _resolve_local(root: Path, value: str) -> str:
    path = Path(value.removeprefix("file://")).expanduser()
    return str(path if path.is_absolute() else (root / path).resolve())


def _parse_sources(file: Path, key: str, value: Any, root: Path) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise BadConfig(f"{_where(file, key)} must be a list of URLs or paths, got {value!r}")
    sources = []
    for item in value:
        source = _string(file, key, item)
        if source.startswith(REMOTE_SCHEMES):
            sources.append(source)
        elif "://" in source and not source.startswith("file://"):
            raise BadConfig(
                f"{_where(file, key)}: unsupported source {source!r}; use "
                + ", ".join(REMOTE_SCHEMES) + " file:// or a local path"
            )
        else:
            sources.append(_resolve_local(root, source))
    return tuple(sources)


def _parse_sha256(file: Path, key: str, value: Any) -> str:
    digest = _string(file, key, value, allow_empty=True).strip().lower().removeprefix("sha256:")
    if digest and not _SHA256.fullmatch(digest):
        raise BadConfig(f"{_where(file, key)} = {value!r} is not a sha256 (64 hex digits) or \"\"")
    return digest


def _parse_version(file: Path, index: int, table: Any, root: Path) -> ImageVersion:
    prefix = f"versions[{index}]"
    if not isinstance(table, dict):
        raise BadConfig(f"{_where(file, prefix)} must be a table ([[versions]]), got {table!r}")
    unknown = sorted(set(table) - _VERSION_KEYS)
    if unknown:
        raise BadConfig(
            f"{_where(file, prefix + '.' + unknown[0])} is not a version key; "
            f"known keys are {', '.join(sorted(_VERSION_KEYS))}"
        )
    for required in ("experiment", "image", "sha256"):
        if required not in table:
            raise BadConfig(f"{_where(file, prefix + '.' + required)} is missing")
    experiment = _string(file, f"{prefix}.experiment", table["experiment"])
    if re.search(r"[\s@]", experiment):
        raise BadConfig(
            f"{_where(file, prefix + '.experiment')} = {experiment!r} must not contain "
            "spaces or '@'"
        )
    image = _string(file, f"{prefix}.image", table["image"])
    if "/" in image or image.startswith(".") or image.endswith((".part", ".lock", ".json")):
        raise BadConfig(
            f"{_where(file, prefix + '.image')} = {image!r} must be a plain file name "
            "such as name-1.0.sif (it names the file in the cache)"
        )
    sha256 = _parse_sha256(file, f"{prefix}.sha256", table["sha256"])
    inputs = _parse_sha256(file, f"{prefix}.inputs", table.get("inputs", ""))
    sources = _parse_sources(file, f"{prefix}.sources", table.get("sources", []), root)
    if sources and not sha256:
        raise BadConfig(
            f"{_where(file, prefix + '.sha256')} is empty but sources are listed: a download "
            "cannot be verified without its sha256; add it (sha256sum IMAGE)"
        )
    default = table.get("default", False)
    if not isinstance(default, bool):
        raise BadConfig(f"{_where(file, prefix + '.default')} must be true or false")
    dacbench = _string(file, f"{prefix}.dacbench", table.get("dacbench", ""), allow_empty=True)
    recipe = None
    if "recipe" in table:
        recipe = _parse_path(file, f"{prefix}.recipe", table["recipe"], root)
    wheelhouse = _parse_wheelhouse(file, f"{prefix}.wheelhouse", table.get("wheelhouse", []), root)
    return ImageVersion(experiment, image, sha256, sources, default, dacbench, file, inputs, recipe,
                        wheelhouse)


def _parse_wheelhouse(file: Path, key: str, value: Any, root: Path) -> tuple[Path, ...]:
    """Wheelhouse directories: a path or a list; relative ones are relative to the catalog root,
    so a catalog can ship its wheels beside its recipes."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise BadConfig(f"{_where(file, key)} must be a directory path or a list of them, "
                        f"got {value!r}")
    return tuple(_parse_path(file, key, item, root) for item in items)


def _parse_path(file: Path, key: str, value: Any, root: Path) -> Path:
    """A path (a recipe, a wheelhouse); relative ones are relative to the catalog root (`recipes/x.def`)."""
    path = Path(_string(file, key, value)).expanduser()
    return path if path.is_absolute() else (root / path).resolve()


def parse_catalog_file(file: Path) -> ImageFamily:
    """Read one catalog file; BadConfig names the file and key when something is wrong."""
    data = read_toml(file, "catalog file")
    unknown = sorted(set(data) - _FAMILY_KEYS)
    if unknown:
        raise BadConfig(
            f"{_where(file, unknown[0])} is not a catalog key; "
            f"known keys are {', '.join(sorted(_FAMILY_KEYS))}"
        )
    if "family" not in data:
        raise BadConfig(f"{_where(file, 'family')} is missing")
    name = _string(file, "family", data["family"])
    # Relative paths are relative to the catalog root: the parent of the catalog directory, like
    # `recipes/x.def` next to `benchmarks/x.toml` in the repository.
    root = file.parent.parent
    recipe = _parse_path(file, "recipe", data["recipe"], root) if "recipe" in data else None
    kind = data.get("kind", "benchmark")
    if kind not in KINDS:
        raise BadConfig(f"{_where(file, 'kind')} = {kind!r} must be one of {', '.join(KINDS)}")
    names = {"benchmarks": (), "agents": ()}
    for key in names:
        if key in data:
            value = data[key]
            if not isinstance(value, list) or not value:
                raise BadConfig(f"{_where(file, key)} must be a non-empty list of names")
            names[key] = tuple(_string(file, key, item) for item in value)
    wrong = "benchmarks" if kind == "agent" else "agents"
    if names[wrong]:
        raise BadConfig(f"{_where(file, wrong)}: a family of kind {kind!r} lists "
                        f"{'agents' if kind == 'agent' else 'benchmarks'}, not {wrong}"
                        + ("" if kind == "agent" else "; set kind = \"agent\" for an agent family"))
    wheelhouse = _parse_wheelhouse(file, "wheelhouse", data.get("wheelhouse", []), root)
    tables = data.get("versions", [])
    if not isinstance(tables, list):
        raise BadConfig(f"{_where(file, 'versions')} must be an array of tables ([[versions]])")
    versions = tuple(_parse_version(file, i, t, root) for i, t in enumerate(tables))
    seen: dict[str, int] = {}
    for i, version in enumerate(versions):
        if version.experiment in seen:
            raise BadConfig(
                f"{_where(file, f'versions[{i}].experiment')} = {version.experiment!r} "
                f"repeats versions[{seen[version.experiment]}]"
            )
        seen[version.experiment] = i
    return ImageFamily(name, recipe, names["benchmarks"], versions, (file,), kind=kind,
                       agents=names["agents"], wheelhouse=wheelhouse)


def _merge(base: ImageFamily, override: ImageFamily) -> ImageFamily:
    versions = list(base.versions)
    for version in override.versions:
        same = [i for i, v in enumerate(versions) if v.experiment == version.experiment]
        if same:
            versions[same[0]] = version
        else:
            versions.append(version)
    if override.kind != base.kind:
        raise BadConfig(f"{override.files[0]}: family {base.name!r} is of kind {base.kind!r} in "
                        f"{base.files[0]}, not {override.kind!r}")
    return ImageFamily(
        name=base.name,
        recipe=override.recipe if override.recipe is not None else base.recipe,
        benchmarks=override.benchmarks or base.benchmarks,
        versions=tuple(versions),
        files=base.files + override.files,
        kind=base.kind,
        agents=override.agents or base.agents,
        wheelhouse=override.wheelhouse or base.wheelhouse,
    )


def _load_dir(directory: Path) -> list[ImageFamily]:
    if not directory.is_dir():
        raise BadConfig(f"catalog directory {directory} does not exist or is not a directory")
    families: dict[str, ImageFamily] = {}
    for file in sorted(directory.glob("*.toml")):
        family = parse_catalog_file(file)
        if family.name in families:
            raise BadConfig(
                f"{_where(file, 'family')} = {family.name!r} is also defined in "
                f"{families[family.name].files[0]}; one file per family and directory"
            )
        families[family.name] = family
    return list(families.values())


class Catalog:
    """Benchmark -> image versions, loaded from catalog directories (later directories win)."""

    def __init__(self, families: Iterable[ImageFamily], dirs: Iterable[Path] = ()):
        self.families: dict[str, ImageFamily] = {}
        for family in families:
            if family.name in self.families:
                self.families[family.name] = _merge(self.families[family.name], family)
            else:
                self.families[family.name] = family
        self.dirs = tuple(dirs)
        self._validate()
        # Later families win a benchmark (or agent) they share; keep that order per name.
        self._by_key: dict[str, list[tuple[str, ImageFamily]]] = {}
        self._agents_by_key: dict[str, list[tuple[str, ImageFamily]]] = {}
        for family in self.families.values():
            index = self._agents_by_key if family.kind == "agent" else self._by_key
            for name in family.served:
                index.setdefault(benchmark_key(name), []).append((name, family))

    @classmethod
    def load(cls, dirs: Iterable[Path] = (), *, packaged: bool = True) -> Catalog:
        """Load the packaged catalog (unless packaged=False), then each directory in `dirs`."""
        all_dirs = ([packaged_catalog_dir()] if packaged else []) + [Path(d) for d in dirs]
        families = [family for directory in all_dirs for family in _load_dir(directory)]
        return cls(families, all_dirs)

    def _validate(self) -> None:
        images: dict[str, ImageVersion] = {}
        for family in self.families.values():
            where = ", ".join(str(f) for f in family.files)
            if not family.served:
                key = "agents" if family.kind == "agent" else "benchmarks"
                raise BadConfig(f"{where}: `{key}` is missing for family {family.name!r}")
            if not family.versions:
                raise BadConfig(f"{where}: family {family.name!r} has no [[versions]]")
            for version in family.versions:
                if not version.sha256 and (version.recipe or family.recipe) is None:
                    raise BadConfig(
                        f"{version.catalog_file}: `sha256` of {version.experiment!r} is empty "
                        f"and neither it nor family {family.name!r} has a `recipe`: it can be "
                        "neither downloaded nor built"
                    )
                other = images.get(version.image)
                if other is not None and other.sha256 != version.sha256:
                    raise BadConfig(
                        f"{version.catalog_file}: `image` {version.image!r} of "
                        f"{version.experiment!r} is also used by {other.experiment!r} in "
                        f"{other.catalog_file} with another sha256; image names must be unique"
                    )
                images[version.image] = version

    def benchmarks(self) -> list[str]:
        """Every benchmark name the catalog serves, sorted (as spelled in the catalog)."""
        return sorted({entries[-1][0] for entries in self._by_key.values()}, key=str.lower)

    def agents(self) -> list[str]:
        """Every agent name the catalog's agent families serve, sorted."""
        return sorted({entries[-1][0] for entries in self._agents_by_key.values()},
                      key=str.lower)

    def _entries(self, benchmark: str, kind: str = "benchmark") -> list[tuple[str, ImageFamily]]:
        index = self._agents_by_key if kind == "agent" else self._by_key
        entries = index.get(benchmark_key(benchmark))
        if not entries:
            known = self.agents() if kind == "agent" else self.benchmarks()
            raise UnknownBenchmark(
                f"{kind} {benchmark!r} is not in the catalog; known {kind}s: "
                f"{', '.join(known) or '(none)'} "
                f"(catalog dirs: {', '.join(str(d) for d in self.dirs)})"
            )
        return entries

    def agent_versions(self, agent: str) -> list[ResolvedImage]:
        """All versions of the agent images serving `agent` (e.g. "PPO"), oldest first."""
        return self.versions(agent, kind="agent")

    def resolve_agent(self, agent: str, experiment: str | None = None) -> ResolvedImage:
        """The agent image for `agent` at `experiment` (None: the newest default)."""
        return self.resolve(agent, experiment, kind="agent")

    def versions(self, benchmark: str, kind: str = "benchmark") -> list[ResolvedImage]:
        """All versions serving `benchmark` (of `kind` "agent": that agent), oldest first
        (later catalogs count as newer)."""
        resolved = []
        for name, family in self._entries(benchmark, kind):
            for version in family.versions:
                resolved.append(
                    ResolvedImage(
                        benchmark=name,
                        family=family.name,
                        experiment=version.experiment,
                        image=version.image,
                        sha256=version.sha256,
                        sources=version.sources,
                        recipe=version.recipe or family.recipe,
                        dacbench=version.dacbench,
                        default=version.default,
                        catalog_file=version.catalog_file,
                        inputs=version.inputs,
                        kind=family.kind,
                        wheelhouse=version.wheelhouse + family.wheelhouse,
                    )
                )
        # An experiment id defined twice (two families) resolves to the later definition.
        latest = {r.experiment: r for r in resolved}
        return [r for r in resolved if latest[r.experiment] is r]

    def resolve(self, benchmark: str, experiment: str | None = None,
                kind: str = "benchmark") -> ResolvedImage:
        """The image for `benchmark` at `experiment` (exp:X or X); None means the newest default.

        With kind="agent", `benchmark` names an agent of the agent families (resolve_agent).
        """
        versions = self.versions(benchmark, kind)
        name = versions[0].benchmark if versions else benchmark
        listing = ", ".join(
            v.experiment + (" (default)" if v.default else "") for v in versions
        )
        if experiment is None:
            defaults = [v for v in versions if v.default]
            if not defaults:
                raise ImageNotFound(
                    f"no version of {name} is marked default; pick an experiment: {listing}"
                )
            return defaults[-1]
        for wanted in (experiment, f"exp:{experiment}"):
            for version in reversed(versions):
                if version.experiment == wanted:
                    return version
        raise ImageNotFound(
            f"no image for {kind} {name} at experiment {experiment!r}; "
            f"known experiments for {name}: {listing}"
        )
