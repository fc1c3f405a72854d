"""make_runtime: names, options each runtime takes, and what "auto" picks."""

from __future__ import annotations

import pytest

from dacbench_remote.config import RUNTIME_NAMES
from dacbench_remote.errors import BadConfig, RuntimeUnavailable
from dacbench_remote.runtimes import auto_runtime_name, make_runtime
from dacbench_remote.runtimes.apptainer import ApptainerRuntime
from dacbench_remote.runtimes.bwrap import BwrapRuntime, bwrap_problem


def test_named_runtimes_get_their_options():
    bwrap = make_runtime("bwrap", image="/x.sif", binds=["/data:/mnt"], env={"A": "1"},
                         network=True, gpu=False)
    assert isinstance(bwrap, BwrapRuntime)
    assert (bwrap.binds, bwrap.env, bwrap.network) == ([("/data", "/mnt", False)], {"A": "1"},
                                                       True)
    apptainer = make_runtime("apptainer", image="/x.sif", gpu=True, network=False)
    assert isinstance(apptainer, ApptainerRuntime) and apptainer.gpu
    # "singularity" names the same runtime: every name the config, CLI and specs accept works.
    for name in RUNTIME_NAMES:
        if name not in ("auto", "local"):
            assert make_runtime(name, image="/x.sif").name in ("apptainer", "bwrap")


def test_local_runtime_is_loaded_lazily():
    local = make_runtime("local", python="/usr/bin/python3", env={"A": "1"})
    assert type(local).__name__ == "LocalRuntime" and local.name == "local"


def test_unknown_name_lists_the_choices():
    with pytest.raises(BadConfig, match="unknown runtime 'docker'; choose one of auto, "
                                        "apptainer, singularity, bwrap, local"):
        make_runtime("docker", image="/x.sif")


def test_container_runtimes_need_an_image():
    with pytest.raises(BadConfig, match=r"the bwrap runtime needs an image \(a \.sif file\)"):
        make_runtime("bwrap")


def test_options_a_runtime_cannot_honour_are_refused():
    with pytest.raises(BadConfig, match="the bwrap runtime does not support gpu=True"):
        make_runtime("bwrap", image="/x.sif", gpu=True)


def test_auto_without_any_runtime_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeUnavailable, match=r"apt-get install bubblewrap squashfs-tools"):
        make_runtime("auto", image="/x.sif")


def test_auto_picks_bwrap_without_apptainer(monkeypatch):
    import dacbench_remote.runtimes as runtimes

    monkeypatch.setattr(runtimes, "apptainer_available", lambda: False)  # even if installed
    problem = bwrap_problem()
    assert problem is None, f"bwrap cannot run here: {problem}"
    assert auto_runtime_name() == "bwrap"
    assert isinstance(make_runtime("auto", image="/x.sif"), BwrapRuntime)


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit, RuntimeUnavailable])
def test_a_start_interrupted_before_the_server_runs_leaves_no_socket_directory(
        monkeypatch, tmp_path, interruption):
    """A trial's SIGTERM (SystemExit in its worker) or Ctrl-C while the runtime prepares: the
    caller has no server to stop, so start() removes the directory new_socket_path made."""
    import dacbench_remote._sys.sockets as sockets

    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(tmp_path / "s"))
    runtime = make_runtime("local")

    def prepare():
        raise interruption("stopped while preparing")

    monkeypatch.setattr(runtime, "prepare", prepare)
    path = sockets.new_socket_path()
    assert path.parent.is_dir()
    with pytest.raises(interruption):
        runtime.start(path)
    assert not path.parent.exists()
    assert list((tmp_path / "s").iterdir()) == []
