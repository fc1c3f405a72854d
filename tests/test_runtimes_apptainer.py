"""The apptainer runtime's command lines and errors; no Apptainer is installed on CI machines."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from dacbench_remote._sys.apptainer import find_apptainer
from dacbench_remote.errors import BadConfig, CorruptImage, ImageError, RuntimeUnavailable
from dacbench_remote.images import sif as sif_module
from dacbench_remote.images.sif import write_sif
from dacbench_remote.runtimes.apptainer import ApptainerRuntime
from dacbench_remote.runtimes.base import numeric_environment, parse_bind
from dacbench_remote.runtimes.bwrap import BwrapRuntime
from tests.needs import need_tools

SOCKET = Path("/run/user/1000/dacbench-remote/srv-00000001/ctl.sock")


def test_default_command_line():
    runtime = ApptainerRuntime("/images/base.sif")
    inside = "/tmp/dacbench-remote/srv-00000001"
    assert runtime.run_argv("/usr/bin/apptainer", SOCKET, Path("/scratch/w/srv-00000001")) == [
        "/usr/bin/apptainer", "run", "--containall", "--cleanenv",
        "--workdir", "/scratch/w/srv-00000001",  # /tmp, /var/tmp, $HOME: not the 64 MB session
        # this server's directory alone, under /tmp inside: Apptainer makes the mount point in
        # its own /tmp even where the site disables overlay and underlay
        "--bind", f"/run/user/1000/dacbench-remote/srv-00000001:{inside}",
        "/images/base.sif", "--socket", f"{inside}/ctl.sock", "--exit-on-stdin-close",
    ]


def test_a_socket_directory_under_tmp_keeps_its_path():
    runtime = ApptainerRuntime("/images/base.sif")
    socket = Path("/tmp/dacbench-remote-1000/srv-0000000a/ctl.sock")
    argv = runtime.run_argv("apptainer", socket)
    assert argv[argv.index("--bind") + 1] == str(socket.parent)
    assert argv[argv.index("--socket") + 1] == str(socket)


def test_gpu_binds_and_switched_off_isolation():
    runtime = ApptainerRuntime("/images/base.sif", gpu=True, containall=False, cleanenv=False,
                               binds=["/data:/mnt/data:ro", "/results"])
    argv = runtime.run_argv("/opt/bin/singularity", SOCKET)
    assert argv[:3] == ["/opt/bin/singularity", "run", "--nv"]
    assert "--containall" not in argv and "--cleanenv" not in argv
    binds = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--bind"]
    # Without --contain, /tmp is the host's: the directory is bound at its own path.
    assert binds == ["/run/user/1000/dacbench-remote/srv-00000001", "/data:/mnt/data:ro",
                     "/results:/results"]
    assert argv.index("/images/base.sif") > argv.index("--nv")
    assert argv[argv.index("--socket") + 1] == str(SOCKET)


def test_cleanenv_off_under_containall_is_refused():
    # internal/pkg/runtime/launch/launcher_linux.go: --containall sets CleanEnv = true.
    with pytest.raises(BadConfig, match=r"cleanenv=False has no effect with containall=True "
                                        r"\(Apptainer's --containall implies --cleanenv\); pass "
                                        r"containall=False"):
        ApptainerRuntime("/x.sif", cleanenv=False)


@pytest.mark.parametrize("runtime_class", [ApptainerRuntime, BwrapRuntime])
@pytest.mark.parametrize("name", ["HOME", "UID", "GID", "APPTAINER_SHELL", "SINGULARITY_APPNAME"])
def test_variables_apptainer_drops_are_refused(runtime_class, name):
    # internal/pkg/util/env/create.go: "Overriding HOME environment variable with
    # APPTAINERENV_HOME is not permitted" (a warning, and the value is dropped).
    with pytest.raises(BadConfig, match=rf"env=\{{'{name}': \.\.\.\}} cannot be set in a container"):
        runtime_class("/x.sif", env={name: "/somewhere"})


def test_home_refusal_says_what_to_do_instead():
    with pytest.raises(BadConfig, match="point your code at another variable"):
        ApptainerRuntime("/x.sif", env={"HOME": "/data"})


# Every flag of `apptainer run` that a variable can set (the EnvKeys of cmd/internal/cli/
# action_flags.go and apptainer.go at 1.5.3+), read with both prefixes (pkg/cmdline/flag.go).
_FLAG_KEYS = (
    "APP APPNAME BIND BINDPATH MOUNT HOME OVERLAY OVERLAYIMAGE SCRATCH SCRATCHDIR WORKDIR "
    "DISABLE_CACHE SHELL CWD TARGET_CWD PWD TARGET_PWD HOSTNAME NETWORK NETWORK_ARGS DNS "
    "SECURITY APPLY_CGROUPS CONTAINLIBS FUSESPEC BOOT FAKEROOT CLEANENV COMPAT CONTAIN "
    "CONTAINALL NV NVCCLI COMPAT32 ROCM WRITABLE WRITABLE_TMPFS NO_HOME NO_MOUNT NOSHIMINIT "
    "NV_OFF NO_NV ROCM_OFF NO_ROCM PID UNSHARE_PID NO_PID IPC UNSHARE_IPC NET UNSHARE_NET UTS "
    "UNSHARE_UTS USERNS UNSHARE_USERNS KEEP_PRIVS NO_PRIVS ADD_CAPS DROP_CAPS ALLOW_SETUID "
    "NOENV ENV_FILE NO_UMASK NO_EVAL DMTCP_LAUNCH DMTCP_RESTART BLKIO_WEIGHT "
    "BLKIO_WEIGHT_DEVICE CPU_SHARES CPUSET_CPUS CPUSET_MEMS MEMORY MEMORY_RESERVATION "
    "MEMORY_SWAP OOM_KILL_DISABLE PIDS_LIMIT UNSQUASH IGNORE_SUBUID IGNORE_FAKEROOT_COMMAND "
    "IGNORE_USERNS UNDERLAY SHARENS RUNSCRIPT_TIMEOUT NETNS_PATH INTEL_HPU DOCKER_USERNAME "
    "DOCKER_PASSWORD DOCKER_LOGIN DOCKER_HOST BUILDKIT_HOST FORCE NOHTTPS NO_HTTPS CONFIG_FILE "
    "AUTH_FILE")
APPTAINER_FLAG_KEYS = _FLAG_KEYS.split()


def clear_numeric_environment(monkeypatch) -> None:
    """This machine's OPENBLAS_CORETYPE and the like would be passed in: tests start without."""
    for name in numeric_environment(os.environ):
        monkeypatch.delenv(name)


def test_the_apptainer_process_gets_a_scrubbed_environment(monkeypatch):
    clear_numeric_environment(monkeypatch)
    for key in APPTAINER_FLAG_KEYS:
        monkeypatch.setenv(f"APPTAINER_{key}", "/site/scratch")
        monkeypatch.setenv(f"SINGULARITY_{key}", "/site/scratch")
    for name in ("APPTAINERENV_LEAK", "SINGULARITYENV_LEAK", "APPTAINERENV_PATH",
                 "SINGULARITYENV_PREPEND_PATH"):
        monkeypatch.setenv(name, "from-the-host")
    kept = {"APPTAINER_CACHEDIR": "/scratch/cache", "APPTAINER_TMPDIR": "/scratch/tmp",
            "APPTAINER_CONFIGDIR": "/home/u/.apptainer", "SINGULARITY_CACHEDIR": "/scratch/c",
            "APPTAINER_ENCRYPTION_PASSPHRASE": "secret", "APPTAINER_DEBUG": "1"}
    for name, value in {**kept, "TERM": "xterm", "https_proxy": "http://proxy:3128",
                        "HOST_ONLY": "1"}.items():
        monkeypatch.setenv(name, value)
    runtime = ApptainerRuntime("/x.sif", env={"SEED": "3"})
    runtime.version = "apptainer version 1.5.3"
    env = runtime.environment()
    leaked = sorted(name for name in env if name.startswith(("APPTAINER", "SINGULARITY"))
                    and name not in kept and name != "APPTAINERENV_SEED")
    assert leaked == []
    assert {name: env[name] for name in kept} == kept
    # --cleanenv keeps the rest out of the container, except what Apptainer always passes.
    assert env["HOST_ONLY"] == "1" and "TERM" not in env and "https_proxy" not in env
    assert env["APPTAINERENV_SEED"] == "3"


def test_numeric_library_variables_of_the_host_are_injected_and_env_wins(monkeypatch):
    """With --cleanenv the container would not see OPENBLAS_CORETYPE or OMP_NUM_THREADS, which
    an in-process run reads (another BLAS kernel, other CMA-ES episodes): they are injected, and
    the user's env wins over them."""
    clear_numeric_environment(monkeypatch)
    for name, value in {"OPENBLAS_CORETYPE": "Haswell", "OMP_NUM_THREADS": "8",
                        "MKL_CBWR": "COMPATIBLE", "NPY_DISABLE_CPU_FEATURES": "AVX512F",
                        "OMPX_NOT_A_PREFIX": "1", "HOST_ONLY": "1"}.items():
        monkeypatch.setenv(name, value)
    runtime = ApptainerRuntime("/x.sif", env={"OMP_NUM_THREADS": "1"})
    runtime.version = "apptainer version 1.5.3"
    injected = {name.removeprefix("APPTAINERENV_"): value
                for name, value in runtime.environment().items()
                if name.startswith("APPTAINERENV_")}
    assert injected == {"OPENBLAS_CORETYPE": "Haswell", "OMP_NUM_THREADS": "1",
                        "MKL_CBWR": "COMPATIBLE", "NPY_DISABLE_CPU_FEATURES": "AVX512F"}


def test_without_cleanenv_the_host_environment_is_the_users_choice(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("APPTAINER_BINDPATH", "/site")
    env = ApptainerRuntime("/x.sif", containall=False, cleanenv=False).environment()
    assert env["TERM"] == "xterm" and "APPTAINER_BINDPATH" not in env


def test_user_env_travels_as_apptainerenv_or_singularityenv():
    runtime = ApptainerRuntime("/x.sif", env={"SEED": "3"})
    runtime.version = "apptainer version 1.3.4"
    env = runtime.environment()
    assert env["APPTAINERENV_SEED"] == "3" and "SINGULARITYENV_SEED" not in env
    runtime.version = "singularity-ce version 4.1.0"
    env = runtime.environment()
    assert env["SINGULARITYENV_SEED"] == "3" and "APPTAINERENV_SEED" not in env


def _as_apptainer_injects(environment_script: str, injected: dict[str, str],
                          names: list[str]) -> dict[str, str]:
    """What a shell sees after Apptainer's injection, modelled on injectEnvHandler
    (process_linux.go at 1.5.3+): after the image's env scripts, each APPTAINERENV_KEY=VALUE
    becomes `export KEY="VALUE"` with only `"` escaped (shell.EscapeDoubleQuotes)."""
    exports = "".join(f'export {key}="{value.replace(chr(34), chr(92) + chr(34))}"\n'
                      for key, value in injected.items())
    script = environment_script + "\n" + exports + "".join(
        f'printf "%s\\0" "${name}"\n' for name in names)
    shown = subprocess.run(["env", "-i", "/bin/sh", "-c", script], capture_output=True,
                           check=True).stdout.decode()
    return dict(zip(names, shown.split("\0")[:-1], strict=True))


def test_env_values_arrive_exactly_and_pythonpath_adds_to_the_images():
    values = {"PLAIN": "7 and more", "DOLLAR": "cost $HOME ${X:-y}", "TICKS": "`id` $(id)",
              "SLASHES": "a\\b\\\\c\\", "QUOTES": "say \"hi\" \\\" 'x'",
              "NEWLINE": "one\ntwo", "PYTHONPATH": "/data/my lib:$weird"}
    runtime = ApptainerRuntime("/x.sif", env=values)
    runtime.version = "apptainer version 1.5.3"
    injected = {name.removeprefix("APPTAINERENV_"): value
                for name, value in runtime.environment().items()
                if name.startswith("APPTAINERENV_")}
    image_environment = "export PYTHONPATH=/opt/dacbench-remote"  # the image's %environment
    seen = _as_apptainer_injects(image_environment, injected, list(values))
    expected = {**values, "PYTHONPATH": "/data/my lib:$weird:/opt/dacbench-remote"}
    assert seen == expected
    # An image without a PYTHONPATH of its own gets the user's alone.
    assert _as_apptainer_injects("", {"PYTHONPATH": injected["PYTHONPATH"]},
                                 ["PYTHONPATH"]) == {"PYTHONPATH": "/data/my lib:$weird"}


def test_bwrap_launcher_adds_pythonpath_to_the_images_too():
    from dacbench_remote.runtimes.bwrap import python_path_or_value

    script = ("export PYTHONPATH=/opt/dacbench-remote\nexport PYTHONPATH="
              + python_path_or_value("PYTHONPATH", "/data/my lib:$weird")
              + '\nprintf %s "$PYTHONPATH"')
    shown = subprocess.run(["env", "-i", "/bin/sh", "-c", script], capture_output=True,
                           text=True, check=True).stdout
    assert shown == "/data/my lib:$weird:/opt/dacbench-remote"


def test_local_runtime_adds_a_given_pythonpath_in_front(monkeypatch):
    from dacbench_remote.runtimes.local import _PACKAGE_PARENT, LocalRuntime

    monkeypatch.setenv("PYTHONPATH", "/host/path")
    env = LocalRuntime(env={"PYTHONPATH": "/data/lib"}).environment()
    assert env["PYTHONPATH"].split(os.pathsep) == ["/data/lib", _PACKAGE_PARENT, "/host/path"]


@pytest.mark.parametrize("spec", ["/data,old:/mnt", "/data:/mnt/a,b", ("/x,y", "/mnt")])
def test_binds_with_commas_are_refused(spec):
    # pkg/runtime/engine/apptainer/config/bind.go: --bind is a comma-separated list.
    with pytest.raises(BadConfig, match="paths with commas cannot be bound"):
        parse_bind(spec)


def test_apptainers_refusals_come_with_a_hint():
    runtime = ApptainerRuntime("/x.sif")
    assert "neither overlay nor underlay" in runtime.explain_output(
        "FATAL:   container creation failed: mount hook function failure: destination "
        "/run/user/1000/dacbench-remote/srv-1 doesn't exist in container")
    assert "user bind control = no" in runtime.explain_output(
        "WARNING: Ignoring /x bind mount: user bind control disabled by system administrator")
    assert runtime.explain_output("Traceback: something else") is None


def test_a_socket_directory_shared_with_other_servers_is_refused(tmp_path):
    (tmp_path / "srv-1.sock").touch()  # another server's socket (the old flat layout)
    with pytest.raises(BadConfig, match=r"holds srv-1\.sock: a container gets this whole "
                                        r"directory, so each server needs its own"):
        ApptainerRuntime(tmp_path / "x.sif").start(tmp_path / "srv-2.sock")


def test_missing_binary_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeUnavailable, match=r"neither apptainer nor singularity is on PATH; "
                                                 r"install Apptainer .*runtime='bwrap' "
                                                 r"\(apt-get install bubblewrap squashfs-tools\)"):
        ApptainerRuntime(tmp_path / "x.sif").prepare()
    with pytest.raises(RuntimeUnavailable, match=r"container binary 'apptainer-9' was not found"):
        find_apptainer("apptainer-9")


@pytest.fixture
def fake_binary(tmp_path, monkeypatch) -> Path:
    """A stand-in `apptainer` that only answers --version (named so: it is not the real one)."""
    binary = tmp_path / "bin" / "apptainer"
    binary.parent.mkdir()
    binary.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "apptainer version '
                      '1.3.4-fake"; exit 0; fi\nexit 99\n')
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{binary.parent}{os.pathsep}{os.environ['PATH']}")
    return binary


def test_prepare_with_fake_apptainer_binary_finds_version_and_checks_image(fake_binary,
                                                                          tmp_path):
    image = tmp_path / "not-a.sif"
    image.write_bytes(b"garbage" * 100)
    runtime = ApptainerRuntime(image)
    with pytest.raises(CorruptImage, match=r"not-a\.sif is not a SIF image: bad magic"):
        runtime.prepare()
    assert runtime.binary == shutil.which("apptainer") == str(fake_binary)
    assert runtime.version == "apptainer version 1.3.4-fake"


def test_prepare_with_fake_apptainer_binary_checks_bind_sources(fake_binary, tmp_path):
    need_tools("mksquashfs")
    (tmp_path / "root").mkdir()
    squashfs = tmp_path / "fs.squashfs"
    subprocess.run(["mksquashfs", str(tmp_path / "root"), str(squashfs), "-quiet",
                    "-no-progress"], check=True, stdout=subprocess.DEVNULL)
    write_sif(tmp_path / "ok.sif", deffile=None, labels=None, squashfs_path=squashfs)
    runtime = ApptainerRuntime(tmp_path / "ok.sif", binds=[f"{tmp_path}/absent:/mnt"])
    with pytest.raises(BadConfig, match=r"bind source .*absent does not exist"):
        runtime.prepare()


def _squashfs(tmp_path: Path) -> Path:
    need_tools("mksquashfs")
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    squashfs = tmp_path / "fs.squashfs"
    subprocess.run(["mksquashfs", str(root), str(squashfs), "-quiet", "-no-progress",
                    "-noappend"], check=True, stdout=subprocess.DEVNULL)
    return squashfs


def test_prepare_with_fake_apptainer_binary_accepts_what_apptainer_runs(fake_binary, tmp_path):
    need_tools("siftool")
    squashfs = _squashfs(tmp_path)
    ext3_partition = tmp_path / "ext3.img"
    data = bytearray(8192)
    data[1080:1082] = b"\x53\xef"  # the ext superblock's magic
    ext3_partition.write_bytes(bytes(data))
    ext3_sif = tmp_path / "ext3.sif"
    for args in (["new", str(ext3_sif)], ["add", str(ext3_sif), str(ext3_partition),
                                          "--datatype", "4", "--parttype", "2", "--partfs",
                                          "2", "--partarch", sif_module.ARCH_CODES[
                                              sif_module.host_arch()].lstrip("0")]):
        subprocess.run(["siftool", *args], check=True, capture_output=True)
    sandbox = tmp_path / "sandbox"
    (sandbox / ".singularity.d").mkdir(parents=True)
    # pkg/image: a sandbox directory, a SIF with an ext3 partition, a plain squashfs and a plain
    # ext3 file are all images Apptainer starts itself.
    for image in (sandbox, ext3_sif, squashfs, ext3_partition):
        ApptainerRuntime(image).prepare()


def test_prepare_with_fake_apptainer_binary_refuses_another_arch(fake_binary, tmp_path,
                                                                 monkeypatch):
    image = tmp_path / "arm.sif"
    write_sif(image, deffile=None, labels=None, squashfs_path=_squashfs(tmp_path), arch="arm64")
    monkeypatch.setattr(sif_module.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(sif_module, "BINFMT_MISC", tmp_path / "no-binfmt")
    with pytest.raises(ImageError, match=r"architecture \(arm64\) could not run on the host's "
                                         r"\(amd64\)"):
        ApptainerRuntime(image).prepare()
    with pytest.raises(ImageError, match=r"absent does not exist \(give a \.sif file or a "
                                         r"sandbox directory\)"):
        ApptainerRuntime(tmp_path / "absent").prepare()


def test_each_start_gets_a_private_workdir_removed_at_stop(fake_binary, tmp_path):
    image = tmp_path / "x.sif"
    write_sif(image, deffile=None, labels=None, squashfs_path=_squashfs(tmp_path),
              arch=sif_module.host_arch())
    socket_dir = tmp_path / "s" / "srv-0000000b"
    socket_dir.mkdir(parents=True)
    runtime = ApptainerRuntime(image, workdir=tmp_path / "work")
    with runtime.launch(socket_dir / "ctl.sock") as launch:
        workdir = Path(launch.argv[launch.argv.index("--workdir") + 1])
        assert workdir == tmp_path / "work" / "srv-0000000b"
        assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
        (workdir / "tmp").mkdir()  # what Apptainer makes there
    assert workdir.is_dir()  # the server runs on in it
    for undo in launch.on_stop:
        undo()
    assert not workdir.exists()
    with pytest.raises(RuntimeError), runtime.launch(socket_dir / "ctl.sock") as launch:
        raise RuntimeError("the start failed")
    assert not workdir.exists()  # a failed start leaves no work directory


def test_a_second_container_on_the_same_socket_gets_a_workdir_of_its_own(fake_binary, tmp_path):
    """A trainer joining its pair's server must not share the server's /tmp."""
    image = tmp_path / "x.sif"
    write_sif(image, deffile=None, labels=None, squashfs_path=_squashfs(tmp_path),
              arch=sif_module.host_arch())
    socket_dir = tmp_path / "s" / "pair-0000000c"
    socket_dir.mkdir(parents=True)
    runtime = ApptainerRuntime(image, workdir=tmp_path / "work")
    with runtime.launch(socket_dir / "ctl.sock") as server:
        first = Path(server.argv[server.argv.index("--workdir") + 1])
    with runtime.launch(socket_dir / "ctl.sock") as trainer:
        second = Path(trainer.argv[trainer.argv.index("--workdir") + 1])
    assert first == tmp_path / "work" / "pair-0000000c"
    assert second.parent == first and second.name.startswith("joined-")
    assert stat.S_IMODE(second.stat().st_mode) == 0o700
    for undo in trainer.on_stop:
        undo()
    assert not second.exists() and first.is_dir()  # the server's stays while it runs
    for undo in server.on_stop:
        undo()
    assert not first.exists()
