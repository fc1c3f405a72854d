"""Builds a .sif image from a recipe: with Apptainer where installed, else with our own builder.

Both paths take the same recipe, the same build arguments and the same build context (the
directory relative `%files` sources are read from), and both leave either a complete image at
the output path or nothing.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from .._sys.apptainer import apptainer_available, apptainer_version, find_apptainer
from .._sys.files import atomic_output, sha256_file
from ..errors import BuildError, RecipeError
from . import hostconfig, layout, manifest, native
from .recipe import (
    Recipe,
    apply_templates,
    apptainer_argument_defaults,
    has_commented_templates,
    parse_recipe,
    template_variables,
)
from .sif import host_arch, write_sif
from .wheelhouse import HOW_TO_MAKE, PipSources, check_wheelhouse, distributions, pip_options

BUILDERS = ("auto", "apptainer", "native")
MIRROR_ARG = "mirror"
# The first versions whose `build` knows --build-arg and {{ }} templating (Apptainer 1.2.0's and
# SingularityCE 4.0.0's changelogs); older ones would build the braces literally. Apptainer
# leaves {{ }} in comment lines alone since 1.3.0 (args/reader.go); 1.2 and SingularityCE
# replace them too, so recipes with such comments need 1.3.
TEMPLATING_SINCE = {"apptainer": (1, 2), "singularity-ce": (4, 0)}
COMMENT_SKIPPING_SINCE = {"apptainer": (1, 3)}
_VERSION_RE = re.compile(r"^(\S+) version (\d+)\.(\d+)")

@dataclass(frozen=True)
class BuildResult:
    """A finished image: where it is, its sha256 and size, and how long each phase took."""

    path: Path
    sha256: str
    size: int
    builder: str
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(self.phases.values())


def apptainer_build_command(binary: str, recipe: Path, output: Path,
                            build_args: dict[str, str] | None = None, *,
                            fakeroot: bool | None = None, tmpdir: Path | None = None,
                            run_test: bool = True) -> list[str]:
    """The `apptainer build` call: what spython's Client.build runs, with our options.

    --fakeroot (by default when not root) so it works without root on clusters that allow it;
    --force because we build into a fresh temporary file that exists already; --tmpdir (the
    flag behind $APPTAINER_TMPDIR, in `build` since Singularity 3) for the build's workdir, so
    the root filesystem is not unpacked into a login node's small /tmp.
    """
    fakeroot = os.geteuid() != 0 if fakeroot is None else fakeroot
    command = [binary, "build", "--force", *(["--fakeroot"] if fakeroot else [])]
    if not run_test:
        command.append("--notest")
    if tmpdir is not None:
        command += ["--tmpdir", str(tmpdir)]
    for key, value in sorted((build_args or {}).items()):
        command += ["--build-arg", f"{key}={value}"]
    return [*command, str(output), str(recipe)]


def parse_version(text: str) -> tuple[str, tuple[int, int]] | None:
    """("apptainer", (1, 3)) from `apptainer version 1.3.4-1.el8`; None if unreadable."""
    match = _VERSION_RE.match(text.strip())
    if match is None:
        return None
    return match.group(1).lower(), (int(match.group(2)), int(match.group(3)))


def templating_problem(version_text: str, *, commented_templates: bool = False) -> str | None:
    """Why this `--version` output cannot build a templated recipe, or None if it can.

    `commented_templates`: the recipe has {{ }} in comment lines, which only Apptainer >= 1.3
    skips as our builder does.
    """
    since = COMMENT_SKIPPING_SINCE if commented_templates else TEMPLATING_SINCE
    parsed = parse_version(version_text)
    if parsed is not None:
        flavour, version = parsed
        if flavour in since and version >= since[flavour]:
            return None
    if commented_templates:
        need = ("{{ }} in comment lines, which Apptainer 1.3 and newer leave alone (older ones "
                "and SingularityCE replace them)")
    else:
        need = "build arguments ({{ }} templates), which need Apptainer 1.2 or newer (or " \
               "SingularityCE 4.0 or newer)"
    return f"the recipe uses {need}, and this one reports {version_text.strip()!r}"


def resolve_build_args(recipe_path: Path, os_version: str | None,
                       build_args: dict[str, str] | None) -> dict[str, str]:
    """The build arguments plus `mirror` from the host's apt sources, if the recipe uses it."""
    args = dict(build_args or {})
    if MIRROR_ARG in args or MIRROR_ARG not in template_variables(recipe_path):
        return args
    mirror = hostconfig.debian_mirror(os_version or "bookworm")
    if mirror is None:
        raise BuildError(
            f"{recipe_path} needs a Debian mirror ({{{{ {MIRROR_ARG} }}}}) and none was found in "
            f"this host's apt sources ({hostconfig.APT_SOURCES}, {hostconfig.APT_SOURCES_DIR}); "
            f"pass one with --build-arg {MIRROR_ARG}=URL")
    args[MIRROR_ARG] = mirror
    return args

def _os_version(recipe_path: Path) -> str | None:
    # OSVersion is needed to pick a mirror before the recipe (which needs the mirror) is parsed.
    for line in recipe_path.read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "osversion" and "{{" not in value:
            return value.strip()
    return None

def build_image(
    recipe: Path,
    output: Path,
    *,
    build_args: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    workdir: Path | None = None,
    context: Path | None = None,
    builder: str = "auto",
    run_test: bool = True,
    wheelhouse: Sequence[str | os.PathLike] = (),
    offline: bool = False,
) -> BuildResult:
    """Build `recipe` into the SIF image `output`; raise RecipeError or BuildError if it can't.

    Args:
        recipe, output: the .def file and the .sif to write (complete, or not at all).
        build_args: values of the recipe's {{ NAME }} templates.
        progress: called with each line of progress.
        workdir: holds temporary files (default: the system temp dir); they are removed
            afterwards, whether the build worked or not.
        context: where relative `%files` sources are read from (default: the current
            directory, as for `apptainer build`).
        builder: "auto" (Apptainer if on PATH, else ours; ours when a wheelhouse is given),
            "apptainer" or "native".
        run_test: run `%test`.
        wheelhouse: directories of wheels that pip in `%post` installs from before the index
            (copied into the build; the wheels installed are recorded in the manifest).
        offline: no package index at all (pip's no-index): what the wheelhouse lacks fails.

    Raises:
        RecipeError: the recipe cannot be built as written. BuildError: the build failed
        (the phase and the last output), or a wheelhouse is missing or empty.
    """
    if builder not in BUILDERS:
        raise ValueError(f"builder must be one of {', '.join(BUILDERS)}, not {builder!r}")
    recipe, output = Path(recipe).resolve(), Path(output).resolve()
    context = Path(context or os.getcwd()).resolve()
    report = progress or (lambda message: None)
    if not recipe.is_file():
        raise BuildError(f"recipe {recipe} does not exist")
    sources = PipSources(tuple(check_wheelhouse(wheelhouse)), offline)
    args = resolve_build_args(recipe, _os_version(recipe), build_args)
    if builder == "apptainer" and (sources.wheelhouse or offline):
        raise BuildError("a wheelhouse or an offline build needs dacbench-remote's own builder "
                         "(--builder native): `apptainer build` gives %post no way to reach a "
                         "host directory without changing the recipe")
    # Apptainer cannot hand %post a wheelhouse: with one, `auto` means our builder.
    wants = builder == "apptainer" or (builder == "auto" and not sources.wheelhouse
                                       and not offline)
    binary = find_apptainer() if wants and apptainer_available() else None
    if builder == "apptainer" and binary is None:
        raise BuildError("builder 'apptainer' asked for, but neither apptainer nor singularity "
                         "is on PATH; install Apptainer or use the native builder")
    if binary is None:
        parsed = parse_recipe(recipe, args)
        _refuse_unused(recipe, parsed.unused_build_args)
    else:
        # Apptainer builds what our builder cannot (other bootstraps, %setup, ...): only the
        # templating is checked here, the way `apptainer build` does it.
        text = recipe.read_text()
        defaults = apptainer_argument_defaults(text)
        _refuse_unused(recipe, apply_templates(text, recipe, defaults, args).unused_build_args)
    output.parent.mkdir(parents=True, exist_ok=True)
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    if binary is not None:
        return _build_with_apptainer(binary, recipe, output, args, context=context,
                                     progress=report, run_test=run_test, workdir=workdir)
    return _build_native(parsed, output, context=context, progress=report, workdir=workdir,
                         run_test=run_test, sources=sources)


def _refuse_unused(recipe: Path, unused: tuple[str, ...]) -> None:
    """Unused build arguments are fatal, as in `apptainer build` (cmd/internal/cli/build_linux.go):
    a recipe must build the same with either builder."""
    if unused:
        raise RecipeError(
            f"{recipe}: unused build args: {' '.join(unused)} (apptainer build refuses them too); "
            "remove them, or use them in the recipe as {{ name }} outside comment lines")

def _build_with_apptainer(binary: str, recipe: Path, output: Path, args: dict[str, str], *,
                          context: Path, progress: Callable[[str], None],
                          run_test: bool, workdir: Path | None) -> BuildResult:
    # Not spython's Client.build: it hard-codes the `singularity` name and cannot set the working
    # directory, which Apptainer resolves relative %files sources against. The argv is the same.
    text = recipe.read_text()
    if args or template_variables(recipe, text) or has_commented_templates(text):
        problem = templating_problem(apptainer_version(binary),
                                     commented_templates=has_commented_templates(text))
        if problem:
            raise BuildError(f"cannot build {recipe} with {binary}: {problem}; update Apptainer "
                             "(on clusters try `module load apptainer`) or pass --builder native")
    started = time.monotonic()
    with atomic_output(output, durable=False) as tmp:
        command = apptainer_build_command(binary, recipe, tmp, args, run_test=run_test,
                                          tmpdir=Path(workdir).resolve() if workdir else None)
        progress("apptainer: " + " ".join(command))
        tail: collections.deque[str] = collections.deque(maxlen=native.LOG_TAIL_LINES)
        with subprocess.Popen(command, cwd=context, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                              errors="replace") as process:
            assert process.stdout is not None
            for line in process.stdout:
                tail.append(line.rstrip("\n"))
                progress(line.rstrip("\n"))
            returncode = process.wait()
        if returncode != 0:
            output_tail = "\n".join(tail)
            raise BuildError(f"{binary} build of {recipe} failed (exit {returncode}); "
                             f"last output:\n{output_tail}")
        digest = sha256_file(tmp)
    return BuildResult(output, digest, output.stat().st_size, Path(binary).name,
                       {"apptainer": time.monotonic() - started})

def _build_native(recipe: Recipe, output: Path, *, context: Path,
                  progress: Callable[[str], None], workdir: Path | None,
                  run_test: bool, sources: PipSources) -> BuildResult:
    missing = native.missing_tools()
    if missing:
        raise BuildError(
            "no Apptainer here, and dacbench-remote's own builder needs "
            f"{', '.join(sorted(missing))}: apt-get install {' '.join(sorted(set(missing.values())))}")
    native.check_files(recipe, context)
    temp = Path(tempfile.mkdtemp(prefix="dacbench-remote-build-", dir=workdir))
    try:
        # Rootless (unshare) mode keeps its chroot in here (TMPDIR), owned by a subuid that must
        # traverse this directory; the stage beside it stays private (0700).
        if os.geteuid() != 0:
            temp.chmod(0o711)
        stage = temp / "stage"
        out_dir = temp / "out"
        out_dir.mkdir()
        builder = f"dacbench-remote {__version__}"
        arch = host_arch()  # what mmdebstrap installs, and so what the SIF must say
        pip_settings = {**hostconfig.pip_settings(),
                        **pip_options(sources, "/" + native.WHEELHOUSE_DIR)}
        native.write_stage(
            recipe, stage, layout.labels_for(recipe, arch=arch, builder=builder), context=context,
            compressor=native.SQUASHFS_COMPRESSION, run_test=run_test,
            pip_settings=pip_settings, extra_env=hostconfig.proxy_environment(),
            source_date_epoch=source_date_epoch(), wheelhouse=sources.wheelhouse)
        if sources.wheelhouse:
            progress(f"wheelhouse: {', '.join(map(str, sources.wheelhouse))} first"
                     + (", no index (offline)" if sources.offline else ", then the index"))
        command = native.mmdebstrap_command(recipe, stage, out_dir, arch)
        try:
            phases = native.run_mmdebstrap(command, tmpdir=temp, env={}, progress=progress,
                                           log_path=temp / "build.log")
        except BuildError as exc:
            raise BuildError(f"{exc}{_missing_package_hint(str(exc), sources)}") from None
        started = time.monotonic()
        progress("sif: assembling " + str(output))
        epoch = int((out_dir / native.EPOCH_NAME).read_text())
        squashfs = out_dir / native.SQUASHFS_NAME
        wheels = distributions(native.stage_wheelhouse_dir(stage)) if sources.wheelhouse else []
        build_manifest = manifest.build_manifest(recipe, context, squashfs, epoch=epoch,
                                                 builder=builder, wheels=wheels)
        # The inspect metadata (labels included) is read from the image, as Apptainer does.
        digest = write_sif(output, deffile=recipe.text.encode(), labels=None,
                           squashfs_path=squashfs, arch=arch, created=epoch,
                           attributes=layout.inspect_attributes(out_dir / native.INSPECT_DIR),
                           json_objects={manifest.MANIFEST_NAME:
                                         manifest.manifest_bytes(build_manifest)})
        phases["sif"] = time.monotonic() - started
        progress(f"sif: done in {phases['sif']:.1f} s")
    finally:
        _remove_workdir(temp)
    return BuildResult(output, digest, output.stat().st_size, "dacbench-remote", phases)

def _missing_package_hint(output: str, sources: PipSources) -> str:
    """What to do when pip in %post found no distribution for a requirement."""
    if "No matching distribution found" not in output:
        return ""
    dirs = ", ".join(map(str, sources.wheelhouse))
    if sources.wheelhouse and sources.offline:
        where = f"offline, pip in %post looked only in the wheelhouse ({dirs}), which lacks it"
    elif sources.wheelhouse:
        where = f"pip in %post found it in neither the wheelhouse ({dirs}) nor the package index"
    else:
        where = "pip in %post found it nowhere" + (" (offline, without a wheelhouse)"
                                                    if sources.offline else " on the package index")
    return (f"\n({where}: put its wheel into a wheelhouse and pass --wheelhouse DIR; "
            f"{HOW_TO_MAKE})")


def source_date_epoch() -> int | None:
    """$SOURCE_DATE_EPOCH as the build's one timestamp, if set (else the build derives one)."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise BuildError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds since 1970")
    return int(value)


def _remove_workdir(path: Path) -> None:
    """Remove the build's temporary directory, unless something is still mounted inside it."""
    mounted = _mounts_under(path)
    if mounted:
        # Removing files below a live /proc or /dev mount could reach the host's: leave it.
        raise BuildError(f"build directory {path} still has mounts ({', '.join(mounted)}); "
                         "unmount them, then remove the directory")
    shutil.rmtree(path, ignore_errors=False)

def _mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    try:
        with open("/proc/self/mountinfo") as mountinfo:
            points = [line.split()[4] for line in mountinfo]
    except OSError:
        return []
    return [point for point in points if point.startswith(prefix)]
