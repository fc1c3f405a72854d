"""The native builder's pieces: the mmdebstrap call, the staged hook, phase timing and failures."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from dacbench_remote.errors import BuildError, RecipeError
from dacbench_remote.images import layout, native
from dacbench_remote.images.recipe import parse_recipe, parse_recipe_text

REPO = Path(__file__).resolve().parent.parent
MIRROR = {"mirror": "http://mirror.invalid/debian"}


@pytest.fixture
def base_recipe():
    return parse_recipe(REPO / "recipes" / "dacbench-base.def", MIRROR)


def test_mmdebstrap_command_bootstraps_the_recipes_debian(base_recipe, tmp_path: Path):
    stage = tmp_path / "stage"
    command = native.mmdebstrap_command(base_recipe, stage, tmp_path / "out", "amd64")
    assert command[0] == "mmdebstrap"
    assert "--variant=minbase" in command and "--format=null" in command
    assert "--architectures=amd64" in command
    assert "--include=python3,libstdc++6,python3-pip-whl" in command
    hooks = [arg.removeprefix("--customize-hook=") for arg in command
             if arg.startswith("--customize-hook=")]
    # The stage goes in and the squashfs comes out through mmdebstrap's copy hooks, which run as
    # the calling user even when rootless (the hook itself runs as a subuid there).
    assert hooks == [
        f'mkdir "$1/{native.STAGE_DIR}"',
        f"sync-in {stage} /{native.STAGE_DIR}",
        f'sh "$1/{native.STAGE_DIR}/{native.HOOK_NAME}" "$1"',
        f"copy-out /{native.OUT_DIR}/{native.SQUASHFS_NAME} /{native.OUT_DIR}/{native.EPOCH_NAME} "
        f"/{native.OUT_DIR}/{native.INSPECT_DIR} {tmp_path / 'out'}",
        f"echo {native.PHASE_MARKER}cleanup"]
    assert command[-3:] == ["bookworm", "/dev/null", "http://mirror.invalid/debian"]


def test_stage_holds_the_singularity_files_and_the_post_script(base_recipe, tmp_path: Path):
    cert = tmp_path / "host-ca.pem"
    cert.write_text("CERT\n")
    labels = layout.labels_for(base_recipe, arch="amd64")
    hook = native.write_stage(
        base_recipe, tmp_path / "stage", labels, context=REPO, compressor="gzip", run_test=True,
        pip_settings={"index-url": "https://index.invalid/simple", "cert": str(cert)},
        extra_env={"https_proxy": "http://proxy.invalid:3128 'quoted'"})
    stage = tmp_path / "stage"
    assert hook == stage / native.HOOK_NAME
    # Private: it may hold credentials, and only mmdebstrap's sync-in (run as us) reads it.
    assert stat.S_IMODE(stage.stat().st_mode) == 0o700
    runscript = stage / "singularity.d" / "runscript"
    assert runscript.read_text().startswith("#!/bin/sh\n")
    assert stat.S_IMODE(runscript.stat().st_mode) == 0o755
    assert (stage / "singularity.d" / "test").is_file()
    assert (stage / "build" / "post.sh").read_text().strip() == base_recipe.post.strip()
    pip_conf = (stage / "build" / "pip.conf").read_text()
    assert "index-url = https://index.invalid/simple" in pip_conf
    assert f"cert = /{native.BUILD_DIR}/cert.pem" in pip_conf
    assert (stage / "build" / "cert.pem").read_text() == "CERT\n"
    # env.sh is sourced by /bin/sh inside the root: values must survive quoting.
    shown = subprocess.run(
        ["sh", "-c", f'. {stage / "build" / "env.sh"} && printf "%s|%s|%s" '
         '"$https_proxy" "$PIP_CONFIG_FILE" "$SINGULARITY_ENVIRONMENT"'],
        capture_output=True, text=True, check=True).stdout
    assert shown == (f"http://proxy.invalid:3128 'quoted'|/{native.BUILD_DIR}/pip.conf|"
                     "/.singularity.d/env/91-environment.sh")
    script = hook.read_text()
    phases = [line.split()[1] for line in script.splitlines() if line.startswith("phase ")]
    assert phases == ["files", "post", "metadata", "test", "squashfs"]
    staged = stage / "files" / "0" / "dacbench_remote"
    serve = Path("server") / "serve.py"
    assert (staged / serve).read_bytes() == (REPO / "dacbench_remote" / serve).read_bytes()
    assert stat.S_IMODE((staged / serve).stat().st_mode) & 0o444 == 0o444
    # The hook reads the stage where sync-in put it inside the root, never from the host.
    assert f'stage="$root/{native.STAGE_DIR}"' in script and str(stage) not in script
    assert ('\ncp -fLr "$stage"/files/0/dacbench_remote '
            '"$root"/opt/dacbench-remote/dacbench_remote\n') in script
    assert script.index('rm -rf "$stage"') < script.index("phase squashfs")
    # Rootless, the mounted /proc and /sys look owned by nobody: the image records root's.
    assert "-p 'proc m 555 0 0' -p 'sys m 555 0 0'" in script
    assert subprocess.run(["sh", "-n", str(hook)]).returncode == 0


def test_the_builders_umask_changes_no_mode_in_the_image(base_recipe, tmp_path: Path):
    """An HPC user's umask 077 made /.singularity.d's directories 0700: another sha256 than the
    pin. The staged directories are 0755 and the hook sets umask 022 before creating anything,
    whatever umask it inherits."""
    previous = os.umask(0o077)
    try:
        hook = native.write_stage(base_recipe, tmp_path / "stage", {}, context=REPO,
                                  compressor="gzip", run_test=False, pip_settings={},
                                  extra_env={})
    finally:
        os.umask(previous)
    staged = tmp_path / "stage" / "singularity.d"
    directories = [staged, *(path for path in staged.rglob("*") if path.is_dir())]
    assert {staged / "env", staged / "actions", staged / "libs"} <= set(directories)
    assert {stat.S_IMODE(path.stat().st_mode) for path in directories} == {0o755}
    # The hook's own mkdir -p (run under umask 077 here) makes 0755 directories.
    created = tmp_path / "created"
    body = hook.read_text().split('root="$1"', 1)[0] + f'mkdir -p "{created}/a/b"\n'
    subprocess.run(["sh", "-c", "umask 077; exec sh -c \"$0\"", body], check=True)
    assert stat.S_IMODE((created / "a" / "b").stat().st_mode) == 0o755


def test_no_test_phase_without_run_test(base_recipe, tmp_path: Path):
    hook = native.write_stage(base_recipe, tmp_path / "stage", {}, context=REPO,
                              compressor="gzip", run_test=False, pip_settings={}, extra_env={})
    assert "phase test" not in hook.read_text()
    assert not (tmp_path / "stage" / "build" / "pip.conf").exists()


def test_build_directory_with_whitespace_is_refused(base_recipe, tmp_path: Path):
    with pytest.raises(BuildError, match="contains whitespace"):
        native.mmdebstrap_command(base_recipe, tmp_path / "stage", tmp_path / "my out", "amd64")
    with pytest.raises(BuildError, match="contains whitespace"):
        native.mmdebstrap_command(base_recipe, tmp_path / "my stage", tmp_path / "out", "amd64")


def test_unreadable_pip_certificate_is_named(base_recipe, tmp_path: Path):
    with pytest.raises(BuildError, match=r"cannot copy pip's cert .*gone\.pem"):
        native.write_stage(base_recipe, tmp_path / "stage", {}, context=REPO, compressor="gzip",
                           run_test=False, pip_settings={"cert": str(tmp_path / "gone.pem")},
                           extra_env={})


def test_broken_symlink_in_files_names_the_line(tmp_path: Path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "dangling").symlink_to(tmp_path / "nowhere")
    recipe = parse_recipe_text("Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: x\n"
                               "%files\n    pkg /opt/pkg\n", tmp_path / "r.def")
    with pytest.raises(RecipeError, match=r"r\.def:5: cannot copy %files source 'pkg'.*dangling"):
        native.write_stage(recipe, tmp_path / "stage", {}, context=tmp_path, compressor="gzip",
                           run_test=False, pip_settings={}, extra_env={})


def test_check_files_names_missing_sources(tmp_path: Path):
    recipe = parse_recipe_text(
        "Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: x\n%files\n"
        "    present /opt/present\n    absent /opt/absent\n", tmp_path / "r.def")
    (tmp_path / "present").write_text("")
    with pytest.raises(RecipeError, match=r"r\.def:6: %files source 'absent' not found"):
        native.check_files(recipe, tmp_path)
    (tmp_path / "absent").mkdir()
    native.check_files(recipe, tmp_path)


def fake_mmdebstrap(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "fake.sh"
    script.write_text(body)
    return ["sh", str(script), "x", "y", "z"]


def test_phases_are_timed_by_marker_lines(tmp_path: Path, monkeypatch):
    command = fake_mmdebstrap(tmp_path, f"""\
echo "I: bootstrapping"
echo "{native.PHASE_MARKER}post"
echo "Collecting numpy"
echo "{native.PHASE_MARKER}test"
echo "Luby: one step ok"
echo "{native.PHASE_MARKER}cleanup"
""")
    # A clock that advances one second per reading: each phase then lasts exactly as many
    # readings as the builder takes between its marker and the next (no wall-clock timing).
    ticks = iter(range(1000))
    monkeypatch.setattr(native, "time", SimpleNamespace(monotonic=lambda: float(next(ticks))))
    messages: list[str] = []
    phases = native.run_mmdebstrap(command, tmpdir=tmp_path, env={}, progress=messages.append,
                                   log_path=tmp_path / "build.log")
    assert list(phases) == ["bootstrap", "post", "test", "cleanup"]
    # Each phase runs from its marker to the next, on one clock: consecutive, none negative.
    assert all(seconds == 1.0 for seconds in phases.values()), phases
    assert "test: Luby: one step ok" in messages
    assert "post: running" in messages
    assert not any("numpy" in m for m in messages)  # pip chatter goes to the log only
    assert "Collecting numpy" in (tmp_path / "build.log").read_text()


def test_failure_names_the_phase_and_shows_the_output_tail(tmp_path: Path):
    command = fake_mmdebstrap(tmp_path, f"""\
echo "{native.PHASE_MARKER}post"
echo "ERROR: No matching distribution found for numpy==0.0.0"
exit 3
""")
    with pytest.raises(BuildError) as caught:
        native.run_mmdebstrap(command, tmpdir=tmp_path, env={}, progress=lambda m: None,
                              log_path=tmp_path / "build.log")
    message = str(caught.value)
    assert "failed in phase 'post'" in message and "exited with 3" in message
    assert "No matching distribution found for numpy==0.0.0" in message


def test_images_are_squashed_with_gzip_as_apptainer_builds_them(base_recipe, tmp_path: Path):
    # Every kernel and squashfuse reads gzip; zstd needs Linux >= 4.14 and a squashfuse built
    # with it (Apptainer: "Non-gzip squashfs compression might not work with some installations").
    assert native.SQUASHFS_COMPRESSION.split()[0] == "gzip"
    hook = native.write_stage(base_recipe, tmp_path / "stage", {}, context=REPO,
                              compressor=native.SQUASHFS_COMPRESSION, run_test=False,
                              pip_settings={}, extra_env={})
    assert "-comp gzip -Xcompression-level 6 " in hook.read_text()


# --- %files under Apptainer and under our builder give the same tree ----------------------------

FAMILY_RECIPES = sorted(p for p in (REPO / "recipes").glob("dacbench-*.def"))
FILES_BLOCK_START = "# Files as dacbench-remote's own builder copies them."


def _files_block(recipe_path: Path) -> str:
    """The recipe's %post lines that undo what Apptainer's %files copy brings in."""
    lines = parse_recipe(recipe_path, {**MIRROR, "torch_index_url": ""}).post.splitlines()
    start = next(i for i, line in enumerate(lines) if FILES_BLOCK_START in line)
    end = next(i for i in range(start, len(lines)) if "chmod -R" in lines[i])
    return "\n".join(lines[start:end + 1])


def _tree(top: Path) -> dict[str, tuple]:
    """Every path under `top`: (kind, mode, content) — what an image would hold."""
    tree = {}
    for path in sorted(top.rglob("*")):
        mode = stat.S_IMODE(path.lstat().st_mode)
        kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
        content = path.read_bytes() if kind == "file" else b""
        tree[str(path.relative_to(top))] = (kind, oct(mode), content)
    return tree


@pytest.mark.parametrize("recipe_path", FAMILY_RECIPES, ids=lambda p: p.name)
def test_apptainers_files_copy_ends_as_ours(recipe_path: Path, tmp_path: Path):
    # A checkout made under umask 077, with bytecode the host compiled, and the catalog links.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    subprocess.run(["sh", "-c", 'umask 077; cp -R --no-preserve=mode "$@" "$0"', str(checkout),
                    *(str(REPO / name) for name in ("dacbench_remote", "recipes", "benchmarks"))],
                   check=True)
    package = checkout / "dacbench_remote"
    for name in ("packaged/__pycache__", "__pycache__"):
        pyc = package / ("images" if "packaged" in name else "") / name / "x.cpython-311.pyc"
        pyc.parent.mkdir(parents=True, exist_ok=True)
        pyc.write_bytes(b"host bytecode")
    (package / "stray.pyc").write_bytes(b"host bytecode")
    assert (package / "images" / "packaged" / "benchmarks").is_symlink()
    assert stat.S_IMODE((package / "server" / "serve.py").stat().st_mode) == 0o600

    # Apptainer: `cp -fLr SRC DST` under umask 002 (internal/pkg/build/files/copy.go and the
    # Umask(0o002) in internal/pkg/build/build.go), then the recipe's %post lines.
    apptainer_root = tmp_path / "apptainer"
    (apptainer_root / "opt" / "dacbench-remote").mkdir(parents=True)
    target = apptainer_root / "opt" / "dacbench-remote" / "dacbench_remote"
    subprocess.run(["sh", "-c", 'umask 002; cp -fLr "$0" "$1"', str(package), str(target)],
                   check=True)
    assert (target / "images" / "packaged" / "benchmarks" / "dacbench-base.toml").is_file()
    block = _files_block(recipe_path).replace(" /opt/", f" {apptainer_root}/opt/")
    subprocess.run(["sh", "-c", "set -eu\n" + block], check=True)

    # Ours: the stage's copy (host-only files left out, modes normalised).
    recipe = parse_recipe(recipe_path, {**MIRROR, "torch_index_url": ""})
    native._stage_files(recipe, tmp_path / "files", checkout)
    ours = tmp_path / "files" / "0" / "dacbench_remote"
    assert _tree(target) == _tree(ours)
    assert "images/packaged" not in _tree(target) and "__pycache__" not in _tree(target)
