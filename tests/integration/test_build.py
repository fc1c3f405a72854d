"""The base recipe built for real with our builder: an Apptainer-shaped SIF that runs rootless."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from dacbench_remote.errors import BuildError
from dacbench_remote.images import layout, native
from dacbench_remote.images.build import build_image
from dacbench_remote.images.sif import SifImage, check_runnable, host_arch, inspect_metadata
from tests.needs import need_fuse, need_tools

from ..conftest import IMAGE_TIMEOUT, run_as
from .conftest import BASE_RECIPE, NATIVE_BUILDER_NAME, REPO, host_apt_lists

pytestmark = [pytest.mark.integration, pytest.mark.timeout(IMAGE_TIMEOUT)]  # builds images


def test_base_image_build_is_recorded(base_image_info: dict, record_property):
    for name in ("size", "sha256", "builder"):
        record_property(name, base_image_info[name])
    record_property("phases", json.dumps(base_image_info["phases"]))
    print(f"\nbase image: {base_image_info['size'] / 1e6:.1f} MB, built "
          f"{'now' if base_image_info['built_now'] else 'earlier'} by "
          f"{base_image_info['builder']}; phases (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in base_image_info["phases"].items()))
    assert Path(base_image_info["path"]).stat().st_size == base_image_info["size"]
    assert base_image_info["builder"] == NATIVE_BUILDER_NAME  # named, even beside Apptainer
    assert list(base_image_info["phases"]) == [
        "bootstrap", "files", "post", "metadata", "test", "squashfs", "cleanup", "sif"]


def test_root_mode_build_left_the_hosts_apt_lists_alone(base_image_info: dict):
    # Compared around the build and recorded with the image, also when it was built earlier.
    assert base_image_info["host_apt_lists_unchanged"]


def test_recipe_test_section_passed_inside(base_image_info: dict):
    output = "\n".join(base_image_info["test_output"])
    for benchmark in ("FunctionApproximationBenchmark", "LubyBenchmark", "ToySGDBenchmark"):
        assert f"{benchmark}: one step ok" in output


def test_siftool_sees_an_apptainer_shaped_image(base_image: Path):
    need_tools("siftool")
    listing = subprocess.run(["siftool", "list", str(base_image)], capture_output=True,
                             text=True, check=True).stdout
    assert "Def.FILE" in listing
    assert "JSON.Generic" in listing
    assert f"FS (Squashfs/*System/{host_arch()})" in listing
    deffile = subprocess.run(["siftool", "dump", "1", str(base_image)], capture_output=True,
                             check=True).stdout
    assert deffile.decode() == BASE_RECIPE.read_text()


def test_sif_reader_finds_labels_and_deffile(base_image: Path, base_image_info: dict):
    image = SifImage.open(base_image)
    labels = image.labels()
    assert labels["org.dacbench-remote.benchmarks"] == "FunctionApproximation,Luby,ToySGD"
    assert labels["org.dacbench-remote.dacbench-version"] == "0.5.6"
    assert image.arch == image.primary_partition().arch == host_arch()
    assert labels["org.label-schema.build-arch"] == host_arch()
    check_runnable(image)  # what Apptainer checks before it starts an image (pkg/image/sif.go)
    assert image.deffile() == BASE_RECIPE.read_text()
    assert oct(base_image.stat().st_mode & 0o777)[-1] in "45"  # world-readable


@pytest.fixture(scope="module")
def extracted_root(base_image: Path):
    """The image's root filesystem extracted (as bwrap runtimes do when FUSE is not allowed)."""
    need_tools("unsquashfs")
    offset = SifImage.open(base_image).primary_partition().offset
    target = Path(tempfile.mkdtemp(prefix="dacbench-remote-root-", dir="/var/tmp"))
    root = target / "root"
    try:
        subprocess.run(["unsquashfs", "-q", "-n", "-o", str(offset), "-d", str(root),
                        str(base_image)], check=True, capture_output=True)
        target.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(target)


def test_image_layout_matches_apptainers(extracted_root: Path):
    singularity_d = extracted_root / ".singularity.d"
    assert (singularity_d / "runscript").read_text().startswith("#!/bin/sh\n")
    assert os.access(singularity_d / "runscript", os.X_OK)
    assert "dacbench_remote.server" in (singularity_d / "runscript").read_text()
    assert "PYTHONPATH" in (singularity_d / "env" / "90-environment.sh").read_text()
    labels = json.loads((singularity_d / "labels.json").read_text())
    assert labels["org.dacbench-remote.family"] == "base"
    assert (singularity_d / "Singularity").read_text() == BASE_RECIPE.read_text()
    assert (singularity_d / "test").is_file() and (singularity_d / "runscript.help").is_file()
    for mount_point in ("proc", "sys", "dev", "tmp", "home", "root", "var/tmp"):
        assert (extracted_root / mount_point).is_dir(), mount_point
    assert not any((extracted_root / "proc").iterdir())
    assert (extracted_root / "etc" / "resolv.conf").read_text() == ""
    assert (extracted_root / "etc" / "hosts").read_text() == ""
    assert not (extracted_root / native.STAGE_DIR).exists()
    assert not (extracted_root / ".dacbench-remote-build").exists()  # the stage's former name
    assert not any((extracted_root / "var" / "lib" / "apt" / "lists").glob("*Packages*"))


def test_inspect_metadata_is_what_apptainer_inspect_reads_from_the_root(base_image: Path,
                                                                        extracted_root: Path):
    # `apptainer inspect` trusts the stored object: it must hold what the root holds.
    stored = SifImage.open(base_image).inspect_metadata()
    expected = inspect_metadata(layout.inspect_attributes(extracted_root / ".singularity.d"))
    assert stored == json.loads(expected)
    attributes = stored["data"]["attributes"]
    assert "dacbench_remote.server" in attributes["runscript"]
    assert "DACBench" in attributes["helpfile"] and "import dacbench" in attributes["test"]
    assert "export PYTHONPATH=/opt/dacbench-remote" in \
        attributes["environment"]["/.singularity.d/env/90-environment.sh"]
    assert attributes["deffile"] == BASE_RECIPE.read_text().rstrip("\n")
    assert attributes["labels"]["org.dacbench-remote.family"] == "base"


def test_images_99_base_puts_the_gpu_library_dir_on_the_library_path(extracted_root: Path):
    script = extracted_root / ".singularity.d" / "env" / "99-base.sh"
    shown = subprocess.run(["env", "-i", "/bin/sh", "-c", f'. "{script}"; printf %s "$LD_LIBRARY_PATH"'],
                           capture_output=True, text=True, check=True).stdout
    assert shown == "/.singularity.d/libs"
    assert (extracted_root / ".singularity.d" / "libs").is_dir()  # where --nv binds them


def bwrap_in(root: Path, *argv: str) -> list[str]:
    return ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", str(root), "/",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--clearenv",
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", *argv]


def test_image_runs_rootless_as_an_unprivileged_user(extracted_root: Path,
                                                     unprivileged_user: str):
    need_tools("bwrap")
    server = run_as(unprivileged_user, bwrap_in(
        extracted_root, "/.singularity.d/actions/exec", "python3", "-c",
        "import os, dacbench_remote.server; print('server ok', os.environ['PYTHONPATH'])"))
    assert server.returncode == 0, server.stderr
    assert "server ok /opt/dacbench-remote" in server.stdout
    test = run_as(unprivileged_user, bwrap_in(extracted_root, "/.singularity.d/actions/test"))
    assert test.returncode == 0, test.stderr
    assert "ToySGDBenchmark: one step ok" in test.stdout
    help_run = run_as(unprivileged_user, bwrap_in(extracted_root, "/.singularity.d/actions/run",
                                                  "--help"))
    assert help_run.returncode == 0 and "--socket" in help_run.stdout


def test_squashfuse_reads_the_partition(base_image: Path, tmp_path: Path):
    need_fuse()
    offset = SifImage.open(base_image).primary_partition().offset
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    mounted = subprocess.run(["squashfuse", "-o", f"offset={offset}", str(base_image),
                              str(mount_point)], capture_output=True, text=True)
    assert mounted.returncode == 0, f"squashfuse failed although /dev/fuse is usable: " \
                                    f"{mounted.stderr.strip()}"
    try:
        assert "dacbench_remote.server" in (mount_point / ".singularity.d" / "runscript").read_text()
    finally:
        subprocess.run(["fusermount", "-u", str(mount_point)], check=True)


def test_failing_post_names_the_phase_and_leaves_nothing(tmp_path: Path, base_image: Path):
    # Depends on base_image so the two builds never run at once (the builder is the slow part).
    recipe = tmp_path / "broken.def"
    recipe.write_text("Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: {{ mirror }}\n"
                      "%post\n    echo 'about to fail'\n    exit 7\n")
    work = tmp_path / "work"
    output = tmp_path / "out" / "broken.sif"
    with pytest.raises(BuildError) as caught:
        build_image(recipe, output, context=REPO, workdir=work, builder="native")
    message = str(caught.value)
    assert "failed in phase 'post'" in message and "about to fail" in message
    assert not output.exists()
    assert not any(output.parent.iterdir())  # no half-written image or temp file
    assert not any(work.iterdir())  # temporary build directory removed
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(work) not in mounts


def _need_rootless_build(user: str) -> None:
    """The native builder's tools, newuidmap, and a subuid range (useradd gives one)."""
    need_tools(*native.missing_tools())
    need_tools("newuidmap")
    subuids = Path("/etc/subuid").read_text() if Path("/etc/subuid").exists() else ""
    if not any(line.startswith(f"{user}:") for line in subuids.splitlines()):
        pytest.fail(f"{user} has no /etc/subuid range (needed for unshare mode); Debian's "
                    "useradd gives new users one", pytrace=False)


# `python -m dacbench_remote ARGS`, its image cache building with the native builder.
NATIVE_CLI = """
import sys
from dacbench_remote.images import build, cache

def native_builder(recipe, output, progress, sources):
    report = (lambda message: print(message, file=sys.stderr, flush=True)) if progress else None
    return build.build_image(recipe, output, progress=report, context=cache.BUILD_CONTEXT,
                             builder="native", wheelhouse=sources.wheelhouse,
                             offline=sources.offline).sha256

cache.default_builder = native_builder
from dacbench_remote.cli import main
sys.exit(main(sys.argv[1:]))
"""


MINIMAL_RECIPE = """\
Bootstrap: debootstrap
OSVersion: bookworm
MirrorURL: {{ mirror }}

%files
    payload.txt /opt/payload.txt

%post
    echo "post ran as uid $(id -u)" > /opt/post.txt

%runscript
    cat /opt/payload.txt

%labels
    org.example.kind minimal

%test
    grep -q "post ran as uid 0" /opt/post.txt
    echo "minimal test ok"
"""


def test_rootless_build_of_a_minimal_recipe(unprivileged_user: str, user_python: str,
                                            base_image: Path):
    # Depends on base_image so builds never run at once (the builder is the slow part).
    _need_rootless_build(unprivileged_user)
    # A private (0700) project directory as the build context, as under a home directory; the
    # build directory must be enterable by the subuid mmdebstrap runs as (like /tmp).
    workspace = Path(tempfile.mkdtemp(prefix="dacbench-remote-rootless-", dir="/var/tmp"))
    work = Path(tempfile.mkdtemp(prefix="dacbench-remote-rootless-work-", dir="/var/tmp"))
    try:
        (workspace / "mini.def").write_text(MINIMAL_RECIPE)
        (workspace / "payload.txt").write_text("payload from the build context\n")
        work.chmod(0o755)
        subprocess.run(["chown", "-R", unprivileged_user, str(workspace), str(work)], check=True)
        lists_before = host_apt_lists()
        built = run_as(unprivileged_user, [
            user_python, "-m", "dacbench_remote", "build", "mini.def", "-o", "out/mini.sif",
            "--workdir", str(work), "--builder", "native"], cwd=str(workspace))
        assert built.returncode == 0, built.stdout + built.stderr
        assert "test: minimal test ok" in built.stderr  # progress goes to stderr
        assert built.stdout.startswith("built ") and "/out/mini.sif" in built.stdout
        image = workspace / "out" / "mini.sif"
        assert image.stat().st_uid == pwd.getpwnam(unprivileged_user).pw_uid
        assert SifImage.open(image).labels()["org.example.kind"] == "minimal"
        assert not any(work.iterdir())
        assert host_apt_lists() == lists_before
        offset = SifImage.open(image).primary_partition().offset
        payload = subprocess.run(["unsquashfs", "-o", str(offset), "-cat", str(image),
                                  "/opt/payload.txt"], capture_output=True, text=True)
        assert payload.stdout == "payload from the build context\n", payload.stderr
    finally:
        shutil.rmtree(workspace)
        shutil.rmtree(work)


def test_unprivileged_user_builds_the_packaged_base_image(unprivileged_user: str,
                                                          user_python: str,
                                                          base_image_info: dict):
    """`pull --build` as an ordinary user, empty cache, umask 077: the reported failure.

    Rootless, %post runs as a subuid in unshare mode, and pip inside must still get this host's
    index, CA bundle and proxy (here: a TLS-intercepting mirror) although the user's Python has
    no pip of its own (the user_python venv is made --without-pip, as the failing one was).
    It is also the second build of recipes/dacbench-base.def in this run (the suite's base image
    is the first): it must reproduce that one bit for bit, and the catalog's pin.
    """
    _need_rootless_build(unprivileged_user)
    # 0711: mmdebstrap's chroot lives under TMPDIR, and the subuid must reach it.
    workspace = Path(tempfile.mkdtemp(prefix="dacbench-remote-userbuild-", dir="/var/tmp"))
    home, tmp = workspace / "home", workspace / "tmp"
    try:
        home.mkdir(mode=0o700)
        tmp.mkdir(mode=0o711)
        workspace.chmod(0o711)
        subprocess.run(["chown", "-R", unprivileged_user, str(workspace)], check=True)
        # The machine's environment (pip and proxy variables included), minus anything that
        # points dacbench-remote or Python at root's files.
        environ = {key: value for key, value in os.environ.items()
                   if not key.startswith(("DACBENCH_REMOTE_", "XDG_", "PYTHON", "VIRTUAL_ENV"))}
        environ["TMPDIR"] = str(tmp)

        def as_user(*argv: str) -> subprocess.CompletedProcess:
            # runuser resets HOME; a restrictive umask must not keep the subuid from the stage.
            # The builder under test is named: the native one, even where `pull --build` would
            # pick Apptainer.
            return run_as(unprivileged_user, ["sh", "-c", 'umask 077; exec "$@"', "sh", "env",
                                              f"HOME={home}", user_python, "-c", NATIVE_CLI,
                                              *argv], env=environ)

        pulled = as_user("pull", "Luby", "--build")
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr[-5000:]
        assert "LubyBenchmark: one step ok" in pulled.stderr  # %test ran inside the new image
        lines = pulled.stdout.splitlines()
        image = Path(lines[0].rsplit(": ", 1)[1])
        assert image.parent == home / ".cache" / "dacbench-remote", pulled.stdout
        assert image.stat().st_uid == pwd.getpwnam(unprivileged_user).pw_uid
        assert lines[1] == f"sha256 {base_image_info['sha256']} (built-locally)"
        # Reproducing the pin, it is stored as the pinned image itself (the published name,
        # not STEM.local.sif), and its record says so.
        record = json.loads(Path(f"{image}.json").read_text())
        assert not image.name.endswith(".local.sif") and record["reproduces_pin"] is True
        assert record["inputs_sha256"] == record["pinned_inputs"]

        inspected = as_user("inspect", str(image))
        assert inspected.returncode == 0, inspected.stderr
        assert "benchmarks FunctionApproximation,Luby,ToySGD" in inspected.stdout
        assert lines[1].split()[1] in inspected.stdout  # the sha256 pull reported
        sif = SifImage.open(image)
        partition = sif.primary_partition()
        assert partition.kind == "FS" and partition.is_primary_partition
        assert sif.deffile() == BASE_RECIPE.read_text()
        if shutil.which("unsquashfs"):
            runscript = subprocess.run(["unsquashfs", "-o", str(partition.offset), "-cat",
                                        str(image), "/.singularity.d/runscript"],
                                       capture_output=True, text=True)
            assert "dacbench_remote.server" in runscript.stdout, runscript.stderr
        assert not any(tmp.iterdir())  # the build directory is gone
    finally:
        shutil.rmtree(workspace)
