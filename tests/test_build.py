"""build_image's dispatch, build arguments and error paths; the real build is an integration test."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from dacbench_remote import cli
from dacbench_remote.errors import BuildError, RecipeError
from dacbench_remote.images import build as build_module
from dacbench_remote.images import hostconfig, layout, native
from dacbench_remote.images.build import (
    apptainer_build_command,
    build_image,
    parse_version,
    resolve_build_args,
    templating_problem,
)
from dacbench_remote.images.sif import SifImage
from tests.needs import need_apptainer, need_module, need_root, need_tools

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "recipes" / "dacbench-base.def"


def test_apptainer_build_command_is_built_without_apptainer_installed(tmp_path: Path):
    command = apptainer_build_command("apptainer", BASE, tmp_path / "out.sif",
                                      {"mirror": "http://m.invalid/debian", "a": "1"},
                                      fakeroot=True)
    assert command == ["apptainer", "build", "--force", "--fakeroot",
                       "--build-arg", "a=1", "--build-arg", "mirror=http://m.invalid/debian",
                       str(tmp_path / "out.sif"), str(BASE)]
    as_root = apptainer_build_command("singularity", BASE, tmp_path / "o.sif", fakeroot=False)
    assert as_root == ["singularity", "build", "--force", str(tmp_path / "o.sif"), str(BASE)]


def test_apptainer_build_command_matches_spythons_client_build(tmp_path: Path, monkeypatch):
    # spython's Client.build (which hard-codes `singularity` and cannot set a working directory)
    # would run the same argv: capture what it hands to its command streamer.
    spython_build = need_module("spython.main.build")
    import spython.utils

    captured = []

    def capture(cmd, **kwargs):
        captured.append(list(cmd))
        return iter(())

    monkeypatch.setattr(spython.utils, "check_install", lambda *a, **k: True)
    monkeypatch.setattr(spython_build, "stream_command", capture)
    from spython.main import Client

    output = tmp_path / "out.sif"
    ours = apptainer_build_command("singularity", BASE, output, {"mirror": "http://m.invalid/d"},
                                   fakeroot=True)
    Client.build(recipe=str(BASE), image=str(output), sudo=False, stream=True, force=True,
                 quiet=True, options=ours[3:-2])
    assert captured, "spython did not run a command"
    assert sorted(captured[0]) == sorted(ours)
    assert captured[0][:2] == ["singularity", "build"] and captured[0][-2:] == ours[-2:]


def test_apptainer_builds_the_base_recipe_for_real(tmp_path: Path):
    need_apptainer()  # without it, test_apptainer_build_command_* check the command line
    result = build_image(BASE, tmp_path / "base.sif", context=REPO, builder="apptainer")
    assert result.path.is_file() and result.size > 0


def test_mirror_comes_from_the_host_when_the_recipe_uses_it(tmp_path: Path, monkeypatch):
    sources = tmp_path / "sources.list"
    sources.write_text("deb http://host.invalid/debian bookworm main\n")
    monkeypatch.setattr(hostconfig, "APT_SOURCES", sources)
    monkeypatch.setattr(hostconfig, "APT_SOURCES_DIR", tmp_path / "none")
    assert resolve_build_args(BASE, "bookworm", None) == {"mirror": "http://host.invalid/debian"}
    # A mirror given explicitly wins over the host's.
    assert resolve_build_args(BASE, "bookworm", {"mirror": "http://given.invalid/d"}) == {
        "mirror": "http://given.invalid/d"}


def test_recipe_without_mirror_variable_gets_no_mirror_arg(tmp_path: Path):
    recipe = tmp_path / "fixed.def"
    recipe.write_text("Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: http://x.invalid/\n")
    assert resolve_build_args(recipe, "bookworm", {"other": "1"}) == {"other": "1"}


def test_no_mirror_anywhere_says_to_pass_one(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(hostconfig, "APT_SOURCES", tmp_path / "none.list")
    monkeypatch.setattr(hostconfig, "APT_SOURCES_DIR", tmp_path / "none.d")
    with pytest.raises(BuildError, match=r"needs a Debian mirror.*--build-arg mirror=URL"):
        build_image(BASE, tmp_path / "out.sif", context=REPO, builder="native")
    assert not (tmp_path / "out.sif").exists()


def test_missing_recipe_is_named(tmp_path: Path):
    with pytest.raises(BuildError, match=r"recipe .*nope\.def does not exist"):
        build_image(tmp_path / "nope.def", tmp_path / "out.sif")


def test_unknown_builder_is_rejected(tmp_path: Path):
    with pytest.raises(ValueError, match="builder must be one of auto, apptainer, native"):
        build_image(BASE, tmp_path / "out.sif", builder="docker")


def test_asking_for_apptainer_without_it_says_so(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apptainer, also where it is installed
    with pytest.raises(BuildError, match="neither apptainer nor singularity is on PATH"):
        build_image(BASE, tmp_path / "out.sif", builder="apptainer",
                    build_args={"mirror": "http://m.invalid/debian"})


def test_recipe_errors_surface_before_any_work(tmp_path: Path):
    recipe = tmp_path / "bad.def"
    recipe.write_text("Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: x\n%setup\n")
    with pytest.raises(RecipeError, match=r"bad\.def:4: section %setup is not supported"):
        build_image(recipe, tmp_path / "out.sif", builder="native")


def test_missing_build_tools_are_named_with_their_packages(tmp_path: Path, monkeypatch):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    with pytest.raises(BuildError) as caught:
        build_image(BASE, tmp_path / "out.sif", builder="native", context=REPO,
                    build_args={"mirror": "http://m.invalid/debian"})
    message = str(caught.value)
    assert "mmdebstrap" in message and "mksquashfs" in message
    assert "apt-get install" in message and "squashfs-tools" in message


def test_missing_files_source_names_the_line_before_bootstrapping(tmp_path: Path):
    need_tools("mmdebstrap", "mksquashfs", "chroot")
    recipe = tmp_path / "files.def"
    recipe.write_text("Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: {{ mirror }}\n"
                      "%files\n    not_here /opt/not_here\n")
    with pytest.raises(RecipeError) as caught:
        build_image(recipe, tmp_path / "out.sif", builder="native", context=tmp_path,
                    workdir=tmp_path / "work", build_args={"mirror": "http://m.invalid/d"})
    message = str(caught.value)
    assert f"{recipe}:5: %files source 'not_here' not found" in message
    assert str(tmp_path) in message
    assert not (tmp_path / "out.sif").exists()
    work = tmp_path / "work"
    assert not work.exists() or not any(work.iterdir())


def test_workdir_with_live_mounts_is_left_alone(tmp_path: Path):
    # Removing a build directory that still holds mounts (/proc, /dev) could reach the host's.
    need_root("mounting a tmpfs")
    need_tools("mount", "umount")
    point = tmp_path / "rootfs" / "proc"
    point.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(point)], check=True)
    try:
        (point / "inside").write_text("keep me")
        with pytest.raises(BuildError, match=r"still has mounts \(.*rootfs/proc\)"):
            build_module._remove_workdir(tmp_path)
        assert (point / "inside").read_text() == "keep me"
    finally:
        subprocess.run(["umount", str(point)], check=True)
    build_module._remove_workdir(tmp_path)
    assert not tmp_path.exists()


def test_mounts_under_reads_the_real_mount_table():
    assert build_module._mounts_under(Path("/")) != [] or not os.path.exists("/proc/self/mountinfo")
    assert build_module._mounts_under(Path("/nonexistent-dacbench-remote")) == []


def test_command_line_reports_errors_without_a_traceback(tmp_path: Path, capsys):
    status = cli.main(["build", str(tmp_path / "nope.def"), "-o", str(tmp_path / "x.sif")])
    assert status == 1
    err = capsys.readouterr().err
    assert "error: recipe" in err and "nope.def" in err and "Traceback" not in err


def test_command_line_rejects_malformed_build_args(tmp_path: Path, capsys):
    status = cli.main(["build", str(BASE), "-o", str(tmp_path / "x.sif"), "--build-arg", "novalue"])
    assert status == 1
    assert "expected NAME=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "x.sif").exists()


# --- what `apptainer build` is asked, checked against a FAKE binary (no Apptainer here) --------

FAKE_APPTAINER_BUILD = """#!/bin/sh
# FAKE apptainer for tests, NOT Apptainer: prints the version it is told to, records each call,
# and for `build` writes a placeholder where the image should go.
echo "$*" >> "{log}"
if [ "$1" = --version ]; then echo "{version}"; exit 0; fi
[ "$1" = build ] || exit 98
for last; do :; done
eval "output=\\${{$(($# - 1))}}"
echo fake-sif > "$output"
"""


def fake_apptainer(tmp_path: Path, monkeypatch, version: str) -> Path:
    """A FAKE `apptainer` first on PATH; returns the file its calls are recorded in."""
    log = tmp_path / "calls.log"
    binary = tmp_path / "fakebin" / "apptainer"
    binary.parent.mkdir()
    binary.write_text(FAKE_APPTAINER_BUILD.format(log=log, version=version))
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{binary.parent}{os.pathsep}{os.environ['PATH']}")
    return log


TEMPLATED = "Bootstrap: docker\nFrom: debian:{{ tag }}\n%post\n    echo {{ who }}\n"


def test_templated_build_command_line_with_fake_apptainer_binary(tmp_path: Path, monkeypatch):
    # A recipe only Apptainer can build (Bootstrap: docker): only the templating is checked here.
    log = fake_apptainer(tmp_path, monkeypatch, "apptainer version 1.2.0")
    recipe = tmp_path / "r.def"
    recipe.write_text(TEMPLATED)
    out = tmp_path / "out.sif"
    result = build_image(recipe, out, builder="apptainer", context=tmp_path, run_test=False,
                         build_args={"tag": "bookworm", "who": "me"}, workdir=tmp_path / "w")
    assert out.read_text() == "fake-sif\n" and result.builder == "apptainer"
    calls = log.read_text().splitlines()
    assert calls[0] == "--version"
    words = calls[1].split()
    partial = words[-2]  # the temporary file that is renamed into place
    assert partial.startswith(str(tmp_path)) and partial != str(out)
    fakeroot = ["--fakeroot"] if os.geteuid() != 0 else []
    assert words == ["build", "--force", *fakeroot, "--notest", "--tmpdir", str(tmp_path / "w"),
                     "--build-arg", "tag=bookworm", "--build-arg", "who=me",
                     partial, str(recipe)]
    assert (tmp_path / "w").is_dir()


@pytest.mark.parametrize("version", ["apptainer version 1.1.9", "singularity version 3.8.7",
                                     "singularity-ce version 3.11.4", "garbage"])
def test_build_args_on_an_old_fake_apptainer_binary_are_refused(tmp_path: Path, monkeypatch,
                                                                 version: str):
    log = fake_apptainer(tmp_path, monkeypatch, version)
    recipe = tmp_path / "r.def"
    recipe.write_text(TEMPLATED)
    with pytest.raises(BuildError) as caught:
        build_image(recipe, tmp_path / "o.sif", builder="apptainer",
                    build_args={"tag": "x", "who": "y"})
    message = str(caught.value)
    assert "need Apptainer 1.2 or newer" in message and version in message
    assert "--builder native" in message
    assert log.read_text().splitlines() == ["--version"]  # never asked to build
    assert not (tmp_path / "o.sif").exists()


def test_old_fake_apptainer_binary_still_builds_recipes_without_templates(tmp_path: Path,
                                                                          monkeypatch):
    log = fake_apptainer(tmp_path, monkeypatch, "singularity version 3.8.7")
    recipe = tmp_path / "plain.def"
    recipe.write_text("Bootstrap: docker\nFrom: debian\n")
    build_image(recipe, tmp_path / "o.sif", builder="apptainer")
    assert log.read_text().splitlines()[0].startswith("build --force")


@pytest.mark.parametrize("builder", ["apptainer", "native"])
def test_unused_build_args_are_fatal_as_in_apptainer(tmp_path: Path, monkeypatch, builder):
    # cmd/internal/cli/build_linux.go: Fatalf("unused build args: ...") unless
    # --warn-unused-build-args; a recipe must build the same with both builders.
    log = fake_apptainer(tmp_path, monkeypatch, "apptainer version 1.4.0")
    recipe = tmp_path / "r.def"
    recipe.write_text("Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: {{ mirror }}\n"
                      "%post\n    # {{ typo }} in a comment does not count\n")
    with pytest.raises(RecipeError, match=r"unused build args: typo \(apptainer build refuses "
                                          r"them too\)"):
        build_image(recipe, tmp_path / "o.sif", builder=builder,
                    build_args={"mirror": "http://m.invalid/d", "typo": "1"})
    assert not log.exists()  # refused before Apptainer was asked anything


def test_templates_in_comments_need_apptainer_1_3(tmp_path: Path, monkeypatch):
    # Apptainer 1.2 replaced {{ }} in comments too (comment skipping came in 1.3.0).
    log = fake_apptainer(tmp_path, monkeypatch, "apptainer version 1.2.5")
    recipe = tmp_path / "r.def"
    recipe.write_text("Bootstrap: docker\nFrom: debian\n# set {{ later }}\n")
    with pytest.raises(BuildError, match=r"Apptainer 1\.3 and newer leave alone"):
        build_image(recipe, tmp_path / "o.sif", builder="apptainer")
    assert log.read_text().splitlines() == ["--version"]


@pytest.mark.parametrize(("text", "expected"), [
    ("apptainer version 1.3.4-1.el8", ("apptainer", (1, 3))),
    ("singularity-ce version 4.1.0-jammy\n", ("singularity-ce", (4, 1))),
    ("singularity version 3.8.7-1.el7", ("singularity", (3, 8))),
    ("no version here", None),
])
def test_version_lines_are_read(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize(("version", "commented", "ok"), [
    ("apptainer version 1.1.9", False, False), ("apptainer version 1.2.0", False, True),
    ("apptainer version 1.2.5", True, False), ("apptainer version 1.3.0", True, True),
    ("singularity-ce version 4.0.0", False, True), ("singularity-ce version 4.3.0", True, False),
    ("singularity version 3.8.7", False, False),
])
def test_templating_version_gate(version, commented, ok):
    assert (templating_problem(version, commented_templates=commented) is None) == ok


def test_a_mirror_named_only_in_a_comment_is_not_supplied(tmp_path: Path):
    # Apptainer >= 1.3 skips {{ mirror }} in a comment, so passing mirror would be "unused".
    recipe = tmp_path / "fixed.def"
    recipe.write_text("# MirrorURL: {{ mirror }} once\nBootstrap: debootstrap\n"
                      "OSVersion: bookworm\nMirrorURL: http://x.invalid/\n")
    assert resolve_build_args(recipe, "bookworm", None) == {}


# --- the native builder on another architecture, with a FAKE mmdebstrap run -------------------

ARCH_RECIPE = """Bootstrap: debootstrap
OSVersion: bookworm
MirrorURL: http://m.invalid/debian

%environment
    export A=1

%runscript
    exec echo run "$@"

%help
    Some help.
"""


def test_native_build_on_aarch64_says_arm64_everywhere(tmp_path: Path, monkeypatch):
    """platform.machine() is monkeypatched to aarch64: mmdebstrap is asked for arm64 packages,
    the labels and the SIF say arm64 (sif arch code "04"), and the inspect metadata is what the
    hook copied out of the root. mmdebstrap itself is FAKED (it would bootstrap for real): it
    stands in for the hook by squashing the stage and copying its /.singularity.d files out."""
    need_tools("mksquashfs")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(native, "missing_tools", lambda: {})
    seen = {}

    def fake_mmdebstrap(command, *, tmpdir, env, progress, log_path):
        seen["command"] = command
        hooks = [arg.removeprefix("--customize-hook=") for arg in command]
        stage = Path(next(h for h in hooks if h.startswith("sync-in ")).split()[1])
        out_dir = Path(next(h for h in hooks if h.startswith("copy-out ")).split()[-1])
        singularity_d = stage / "singularity.d"
        seen["labels"] = (singularity_d / "labels.json").read_text()
        inspect = out_dir / native.INSPECT_DIR
        (inspect / "env").mkdir(parents=True)
        for name in ["labels.json", *layout.INSPECT_FILES.values()]:
            if (singularity_d / name).is_file():
                shutil.copy(singularity_d / name, inspect / name)
        shutil.copy(singularity_d / "env" / "90-environment.sh", inspect / "env")
        subprocess.run(["mksquashfs", str(stage), str(out_dir / native.SQUASHFS_NAME),
                        "-noappend", "-quiet", "-no-progress"], check=True,
                       stdout=subprocess.DEVNULL)
        (out_dir / native.EPOCH_NAME).write_text("1700000000\n")
        return {"bootstrap": 0.0}

    monkeypatch.setattr(native, "run_mmdebstrap", fake_mmdebstrap)
    recipe = tmp_path / "arch.def"
    recipe.write_text(ARCH_RECIPE)
    out = tmp_path / "arch.sif"
    build_image(recipe, out, builder="native", context=tmp_path)
    assert "--architectures=arm64" in seen["command"]
    assert '"org.label-schema.build-arch": "arm64"' in seen["labels"]
    assert out.read_bytes()[45:48] == b"04\x00"
    image = SifImage.open(out)
    assert image.primary_partition().arch == "arm64"
    metadata = image.inspect_metadata()["data"]["attributes"]
    assert metadata["runscript"] == '#!/bin/sh\n\n    exec echo run "$@"'
    assert metadata["helpfile"] == "    Some help."
    assert "export A=1" in metadata["environment"]["/.singularity.d/env/90-environment.sh"]
    assert metadata["deffile"] == ARCH_RECIPE.rstrip("\n")
    assert image.labels()["org.label-schema.build-arch"] == "arm64"
