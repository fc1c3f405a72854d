"""dacbench-remote's own image builder, for machines without Apptainer: mmdebstrap, %post, squashfs.

Everything that touches the root filesystem runs as mmdebstrap hooks, so the same steps work as
root (root mode) and rootless (unshare mode, with subuids): our private stage goes in and the
finished squashfs comes out through mmdebstrap's copy hooks, and the rootfs never leaves its
namespace. One hook script prints a marker line per phase, which is how we time phases and name
the one that failed.
"""

from __future__ import annotations

import collections
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import BuildError, RecipeError
from . import layout
from .recipe import Recipe
from .wheelhouse import stage_wheelhouse

PHASE_MARKER = "@@dacbench-remote-phase "
STAGE_DIR = ".dacbench-remote-stage"  # the stage inside the rootfs, removed before squashing
BUILD_DIR = f"{STAGE_DIR}/build"  # what %post reads: env.sh, post.sh, pip.conf, certificates
WHEELHOUSE_DIR = f"{BUILD_DIR}/wheelhouse"  # the wheelhouse's files, pip's find-links in %post
OUT_DIR = ".dacbench-remote-out"  # inside the rootfs, holds the squashfs until copy-out
SQUASHFS_NAME = "rootfs.squashfs"
EPOCH_NAME = "build-epoch"  # the epoch the hook chose, copied out beside the squashfs
INSPECT_DIR = "inspect"  # copies of what `apptainer inspect` reads from /.singularity.d
HOOK_NAME = "customize.sh"
BUILD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REQUIRED_TOOLS = {"mmdebstrap": "mmdebstrap", "mksquashfs": "squashfs-tools", "chroot": "coreutils"}
LOG_TAIL_LINES = 40
# gzip, as `apptainer build` writes (internal/pkg/build/assemblers/sif.go: "Non-gzip squashfs
# compression might not work with some installations": old kernels and squashfuse builds lack
# zstd). Level 6, not mksquashfs' 9: measured on the base image by
# scripts/bench_squashfs_compression.py against zstd level 3 (the former choice): 0.98x the
# size, 3.6x the squash time (9 s), 1.26x the unsquashfs time, +0.3 s of imports from a fresh
# mount; level 9 was 0.7% smaller and took 47 s.
SQUASHFS_COMPRESSION = "gzip -Xcompression-level 6"


def missing_tools() -> dict[str, str]:
    """Tools the native builder needs that are not on PATH, mapped to their Debian package."""
    return {tool: package for tool, package in REQUIRED_TOOLS.items() if shutil.which(tool) is None}


def check_files(recipe: Recipe, context: Path) -> None:
    """Fail before bootstrapping if a %files source is missing from the build context."""
    for copy in recipe.files:
        source = Path(copy.source)
        source = source if source.is_absolute() else context / source
        if not source.exists():
            raise RecipeError(
                f"{recipe.path}:{copy.line}: %files source {copy.source!r} not found "
                f"(looked for {source}; relative sources are taken from the build context "
                f"{context})")


# Go's architecture names (the image's SIF arch) -> Debian's (what mmdebstrap installs).
DEBIAN_ARCH = {"amd64": "amd64", "arm64": "arm64", "ppc64le": "ppc64el", "s390x": "s390x",
               "riscv64": "riscv64", "386": "i386", "arm": "armhf", "loong64": "loong64",
               "mips64le": "mips64el", "ppc64": "ppc64"}


def debian_arch(goarch: str) -> str:
    """The Debian architecture whose packages run as `goarch` (amd64 -> amd64, ppc64le -> ppc64el)."""
    try:
        return DEBIAN_ARCH[goarch]
    except KeyError:
        raise BuildError(f"no Debian architecture is known for {goarch!r}") from None


def mmdebstrap_command(recipe: Recipe, stage: Path, out_dir: Path, arch: str) -> list[str]:
    """The mmdebstrap call that bootstraps the recipe's Debian and runs our hook inside it.

    `arch` (Go's name, as the SIF records it) is passed on, so the packages and the image's
    arch code come from one decision: this machine's architecture.

    minbase matches debootstrap's variant under Apptainer (it has apt, so %post may apt-get);
    format "null" because only the hook's squashfs leaves. The stage (see `write_stage`) goes in
    with sync-in and the squashfs out with copy-out: mmdebstrap runs both as the calling user,
    so in unshare mode, where the hooks run as a subuid that cannot read the user's files, the
    stage stays private (mode 0700) and the image is the user's.
    """
    for path in (stage, out_dir):
        if any(ch.isspace() for ch in str(path)):
            raise BuildError(f"the build directory {path} contains whitespace, which mmdebstrap's "
                             "copy hooks cannot take; pass another workdir")
    command = ["mmdebstrap", "--mode=auto", "--variant=minbase", "--format=null",
               f"--architectures={debian_arch(arch)}"]
    if recipe.include:
        command.append("--include=" + ",".join(recipe.include))
    command += [f"--customize-hook=mkdir \"$1/{STAGE_DIR}\"",
                f"--customize-hook=sync-in {stage} /{STAGE_DIR}",
                f"--customize-hook=sh \"$1/{STAGE_DIR}/{HOOK_NAME}\" \"$1\"",
                f"--customize-hook=copy-out /{OUT_DIR}/{SQUASHFS_NAME} /{OUT_DIR}/{EPOCH_NAME} "
                f"/{OUT_DIR}/{INSPECT_DIR} {out_dir}",
                f"--customize-hook=echo {PHASE_MARKER}cleanup",
                recipe.os_version, "/dev/null", recipe.mirror_url]
    return command


def write_stage(recipe: Recipe, stage: Path, labels: dict[str, str], *, context: Path,
                compressor: str, run_test: bool,
                pip_settings: dict[str, str], extra_env: dict[str, str],
                source_date_epoch: int | None = None,
                wheelhouse: Sequence[Path] = ()) -> Path:
    """Write everything the hook needs under `stage` (created, mode 0700); return the hook's path.

    The stage may hold secrets (a client certificate, an index URL with a token): it is only
    ever read by us and, copied into the rootfs by mmdebstrap, by the build itself. The
    `wheelhouse` directories' files go to `stage_wheelhouse_dir(stage)`, which %post's pip
    reads as /WHEELHOUSE_DIR (pip_settings must say so: wheelhouse.pip_options).
    """
    stage.mkdir(mode=0o700)
    singularity_d = stage / "singularity.d"
    for name, (content, mode) in layout.singularity_files(recipe, labels).items():
        target = singularity_d / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        target.chmod(mode)
    (singularity_d / "libs").mkdir(exist_ok=True)
    for directory in [singularity_d, *singularity_d.rglob("*")]:
        if directory.is_dir():  # copied into the image with their modes: not the umask's
            directory.chmod(0o755)

    build = stage / "build"
    build.mkdir()
    env = {"PATH": BUILD_PATH, "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND":
           "noninteractive", "SINGULARITY_ROOTFS": "/", "APPTAINER_ROOTFS": "/",
           "SINGULARITY_ENVIRONMENT": "/.singularity.d/env/91-environment.sh",
           "APPTAINER_ENVIRONMENT": "/.singularity.d/env/91-environment.sh", **extra_env}
    pip_conf = _pip_conf(pip_settings, build)
    if pip_conf:
        (build / "pip.conf").write_text(pip_conf)
        env["PIP_CONFIG_FILE"] = f"/{BUILD_DIR}/pip.conf"
    (build / "env.sh").write_text(
        "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items()))
    (build / "post.sh").write_text(recipe.post + "\n")
    if wheelhouse:
        stage_wheelhouse(wheelhouse, stage_wheelhouse_dir(stage))
    _stage_files(recipe, stage / "files", context)

    hook = stage / HOOK_NAME
    hook.write_text(_hook_script(recipe, compressor=compressor, run_test=run_test,
                                 source_date_epoch=source_date_epoch))
    return hook


def stage_wheelhouse_dir(stage: Path) -> Path:
    """Where write_stage puts the wheelhouse's files (/WHEELHOUSE_DIR inside the build)."""
    return stage / "build" / "wheelhouse"


def _stage_files(recipe: Recipe, files: Path, context: Path) -> None:
    """Copy %files sources (following symlinks, as `cp -L`) into the stage.

    The copies are made readable for all: images are run by ordinary users, so a private
    checkout's modes (or the builder's umask) must not leave root-only files in them.
    """
    for index, copy in enumerate(recipe.files):
        source = Path(copy.source)
        source = source if source.is_absolute() else context / source
        target = files / str(index) / source.name
        target.parent.mkdir(parents=True)
        try:
            if source.is_dir():
                shutil.copytree(source, target, symlinks=False, ignore=host_only_files)
            else:
                shutil.copy2(source, target)
        except (OSError, shutil.Error) as exc:
            raise RecipeError(f"{recipe.path}:{copy.line}: cannot copy %files source "
                              f"{copy.source!r}: {exc}") from exc
    if files.exists():
        _normalise_modes(files)


def host_only_files(directory: str, names: list[str]) -> set[str]:
    """What %files leaves out of a copied directory (a `shutil.copytree` ignore function).

    Bytecode the host happened to compile (for its own Python) is not part of a recipe's
    inputs, and neither is this package's packaged catalog: it lists the images' own digests,
    so an image holding it could never be pinned (the server never reads it).
    """
    ignored = {name for name in names if name == "__pycache__" or name.endswith(".pyc")}
    if Path(directory).parts[-2:] == ("dacbench_remote", "images") and "packaged" in names:
        ignored.add("packaged")
    return ignored


def _normalise_modes(top: Path) -> None:
    """0755 for directories and executables, 0644 for other files, whatever the checkout had.

    Images are run by ordinary users (so nothing may be root-only), and the same inputs must
    give the same image whatever the builder's umask or checkout modes were.
    """
    for path in [top, *top.rglob("*")]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        path.chmod(0o755 if executable else 0o644)


def _pip_conf(settings: dict[str, str], build: Path) -> str:
    lines = []
    for key, value in settings.items():
        if key in ("cert", "client-cert"):
            name = f"{key}.pem"
            try:
                shutil.copyfile(value, build / name)
            except OSError as exc:
                raise BuildError(f"cannot copy pip's {key} {value} into the build: {exc}; "
                                 "pip on this host could not use it either") from exc
            value = f"/{BUILD_DIR}/{name}"
        lines.append(f"{key} = {value}")
    return "[global]\n" + "\n".join(lines) + "\n" if lines else ""


def _hook_script(recipe: Recipe, *, compressor: str, run_test: bool,
                 source_date_epoch: int | None) -> str:
    q = shlex.quote
    lines = [
        "set -eu",
        # What the build creates gets the same modes whatever the builder's umask (an HPC user's
        # 077 made /.singularity.d's directories 0700: another image than the pin).
        "umask 022",
        'root="$1"',
        f'stage="$root/{STAGE_DIR}"',
        f"phase() {{ echo \"{PHASE_MARKER}$1\"; }}",
        "in_root() {",
        f'    chroot "$root" /usr/bin/env -i /bin/sh -c ". /{BUILD_DIR}/env.sh && exec \\"\\$@\\"" sh "$@"',
        "}",
        *_epoch_lines(source_date_epoch),
        "phase files",
    ]
    for index, copy in enumerate(recipe.files):
        source = '"$stage"' + q(f"/files/{index}/{Path(copy.source).name}")
        destination = '"$root"' + q(copy.destination)
        # Apptainer copies %files with `cp -fLr` into an existing parent.
        lines += [f"mkdir -p \"$(dirname {destination})\"",
                  f"cp -fLr {source} {destination}"]
    lines += [
        "phase post",
        # Apptainer lays out /.singularity.d before %post, which may append to
        # $SINGULARITY_ENVIRONMENT.
        'mkdir -p "$root/.singularity.d/env" "$root/.singularity.d/actions"',
        f"in_root /bin/sh -e /{BUILD_DIR}/post.sh",
        "phase metadata",
        # Not the stage's owner: rootless, that is the building user's uid inside the namespace.
        'cp -R --preserve=mode,timestamps "$stage/singularity.d/." "$root/.singularity.d/"',
        "build_date=$(LC_ALL=C date -u -d \"@$epoch\" +%A_%-d_%B_%Y_%H:%M:%S_UTC)",
        f'sed -i "s/{layout.BUILD_DATE_PLACEHOLDER}/$build_date/" "$root/.singularity.d/labels.json"',
        'rm -rf "$stage"',
    ]
    for directory in layout.MOUNT_DIRS:
        lines.append(f'mkdir -p "$root/{directory}"')
    lines += ['chmod 1777 "$root/tmp" "$root/var/tmp"']
    for name, target in layout.SYMLINKS.items():
        lines.append(f'ln -sfn {q(target)} "$root/{name}"')
    if run_test and recipe.test:
        lines += ["phase test",
                  'chroot "$root" /usr/bin/env -i PATH=' + BUILD_PATH
                  + " HOME=/root LANG=C.UTF-8 /bin/sh /.singularity.d/actions/test"]
    lines += [
        # What mmdebstrap's own cleanup would remove, but only after our hook has squashed.
        # /tmp stays: it holds mmdebstrap's apt configuration, without which its cleanup would
        # run apt on the host's lists; mksquashfs leaves /tmp out instead.
        'rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin',
        'rm -rf "$root"/var/cache/apt/archives/*.deb',
        'mkdir -p "$root/var/lib/apt/lists/partial"',
        # apt made it as _apt rootless (unshare mode) and as root otherwise: one owner for both
        # (apt fixes it up when it next downloads).
        'rm -rf "$root/var/cache/apt/archives/partial"',
        'mkdir -m 700 "$root/var/cache/apt/archives/partial"',
        *_reproducibility_lines(),
    ]
    for name in layout.MOUNT_FILES:
        # Empty bind targets, as Apptainer leaves them (the host's resolv.conf is not for images).
        lines += [f': > "$root/{name}"', f'chmod 644 "$root/{name}"']
    lines += [
        "phase squashfs",
        f'mkdir -p "$root/{OUT_DIR}/{INSPECT_DIR}/env"',
        f'echo "$epoch" > "$root/{OUT_DIR}/{EPOCH_NAME}"',
        *_inspect_copy_lines(),
        # SOURCE_DATE_EPOCH makes mksquashfs clamp every newer timestamp and date the image.
        # /proc, /sys and /dev are mounted by mmdebstrap during hooks: keep only the mount points,
        # as root's (rootless, the mounted proc and sysfs show up owned by nobody).
        f'SOURCE_DATE_EPOCH="$epoch" mksquashfs "$root" "$root/{OUT_DIR}/{SQUASHFS_NAME}" '
        f"-noappend -comp {compressor} "
        "-no-progress -quiet -p 'proc m 555 0 0' -p 'sys m 555 0 0' "
        f"-wildcards -e 'proc/*' 'sys/*' 'dev/*' 'tmp/*' 'var/tmp/*' '{OUT_DIR}'",
    ]
    return "\n".join(lines) + "\n"


def _inspect_copy_lines() -> list[str]:
    """Shell that copies what `apptainer inspect --all` reads out of the finished root, from
    which the host writes inspect-metadata.json (as `apptainer build` does from its sandbox)."""
    singularity_d = '"$root/.singularity.d"'
    target = f'"$root/{OUT_DIR}/{INSPECT_DIR}"'
    names = " ".join(["labels.json", *layout.INSPECT_FILES.values()])
    globs = " ".join(f"{singularity_d}/env/{pattern}" for pattern in layout.INSPECT_ENV_GLOBS)
    return [
        f"for name in {names}; do",
        f'    if [ -f {singularity_d}/"$name" ]; then cp {singularity_d}/"$name" {target}/; fi',
        "done",
        f"for file in {globs}; do",
        f'    if [ -f "$file" ]; then cp "$file" {target}/env/; fi',
        "done",
    ]


# Files that record when or on which host a build ran (mmdebstrap removes the same ones when it
# is given SOURCE_DATE_EPOCH itself); an image must not depend on either.
VOLATILE_FILES = ("var/log/dpkg.log", "var/log/apt/history.log", "var/log/apt/term.log",
                  "var/log/apt/eipp.log.xz", "var/log/alternatives.log", "var/log/bootstrap.log",
                  "var/cache/ldconfig/aux-cache", "etc/hostname", "etc/machine-id",
                  "var/lib/dbus/machine-id", "var/cache/debconf/config.dat-old",
                  "var/cache/debconf/templates.dat-old", "var/lib/dpkg/status-old",
                  "var/lib/dpkg/diversions-old", "var/lib/dpkg/statoverride-old",
                  "etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-")
VOLATILE_DIRS = ("root/.cache", "var/cache/pip", "var/lib/apt/periodic")
# Used when no Debian changelog dates the package set (a recipe that deleted /usr/share/doc).
FALLBACK_EPOCH = 1704067200  # 2024-01-01T00:00:00Z


def _epoch_lines(source_date_epoch: int | None) -> list[str]:
    """Shell that sets $epoch, the build's one timestamp, and exports it (and a fixed hash seed)
    to %post so pip and compileall write deterministic bytecode (checked-hash .pyc files).

    Without SOURCE_DATE_EPOCH it is the newest Debian changelog of the bootstrapped package
    set: Debian clamps every file of a package to its changelog date, so the packages' own
    files keep their times (and their .pyc files stay valid) while everything the build
    creates is clamped to it; the same package set always gives the same epoch.
    """
    if source_date_epoch is not None:
        lines = [f"epoch={int(source_date_epoch)}"]
    else:
        lines = [
            "epoch=$(find \"$root/usr/share/doc\" -name 'changelog*' -printf '%T@\\n' "
            "2>/dev/null | sort -n | tail -n 1 | cut -d. -f1)",
            f'[ -n "$epoch" ] || epoch={FALLBACK_EPOCH}',
        ]
    return [*lines,
            f'echo "export SOURCE_DATE_EPOCH=$epoch" >> "$root/{BUILD_DIR}/env.sh"',
            f'echo "export PYTHONHASHSEED=0" >> "$root/{BUILD_DIR}/env.sh"']


def _reproducibility_lines() -> list[str]:
    """Shell that removes what records the build's time or host, and dates /etc/shadow."""
    volatile = " ".join(f'"$root/{name}"' for name in VOLATILE_FILES + VOLATILE_DIRS)
    return [
        f"rm -rf {volatile}",
        # pwconv writes the day of the build as each account's last password change.
        'days=$((epoch / 86400))',
        'if [ -f "$root/etc/shadow" ]; then',
        '    sed -i -E "s/^([^:]*:[^:]*:)[0-9]+:/\\1$days:/" "$root/etc/shadow"',
        "fi",
    ]


def run_mmdebstrap(command: list[str], *, tmpdir: Path, env: dict[str, str],
                   progress: Callable[[str], None], log_path: Path) -> dict[str, float]:
    """Run mmdebstrap, timing each phase by its marker line; BuildError names the failed phase."""
    phases: dict[str, float] = {}
    phase, started = "bootstrap", time.monotonic()
    progress("bootstrap: mmdebstrap " + " ".join(command[1:-3]))
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    process_env = {**os.environ, **env, "TMPDIR": str(tmpdir)}
    with open(log_path, "w") as log, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, errors="replace", env=process_env) as process:
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                if line.startswith(PHASE_MARKER):
                    now = time.monotonic()
                    phases[phase] = now - started
                    progress(f"{phase}: done in {phases[phase]:.1f} s")
                    phase, started = line[len(PHASE_MARKER):].strip(), now
                    if phase != "cleanup":
                        progress(f"{phase}: running")
                else:
                    tail.append(line.rstrip("\n"))
                    if phase == "test":
                        progress("test: " + line.rstrip("\n"))
            returncode = process.wait()
        except BaseException:
            process.terminate()  # mmdebstrap unmounts and removes its chroot on SIGTERM
            process.wait()
            raise
    phases[phase] = time.monotonic() - started
    if returncode != 0:
        output = "\n".join(tail)
        raise BuildError(
            f"image build failed in phase '{phase}' (mmdebstrap exited with {returncode}); "
            f"last output:\n{output}")
    return phases
