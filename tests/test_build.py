"""build_image's dispatch, build arguments and error paths; the real build is an integration test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dacbench_remote import cli
from dacbench_remote.errors import BuildError, RecipeError
from dacbench_remote.images import build as build_module
from dacbench_remote.images import hostconfig
from dacbench_remote.images.build import (
    apptainer_build_command,
    build_image,
    resolve_build_args,
)
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
