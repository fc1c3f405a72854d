"""Where an image keeps its runscript, environment, labels and test (as Apptainer does)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dacbench_remote.images import layout
from dacbench_remote.images.recipe import parse_recipe, parse_recipe_text
from dacbench_remote.images.sif import inspect_metadata

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def base_recipe():
    return parse_recipe(REPO / "recipes" / "dacbench-base.def",
                        {"mirror": "http://mirror.invalid/debian"})


def test_layout_labels_and_files(base_recipe):
    labels = layout.labels_for(base_recipe, arch="amd64", builder="dacbench-remote 0.1.0",
                               build_date="d")
    assert labels["org.dacbench-remote.benchmarks"] == "FunctionApproximation,Luby,ToySGD"
    assert labels["org.label-schema.usage.singularity.deffile.bootstrap"] == "debootstrap"
    assert labels["org.label-schema.build-date"] == "d"
    files = layout.singularity_files(base_recipe, labels)
    assert files["Singularity"][0] == base_recipe.text
    assert files["runscript"][0].endswith('exec python3 -m dacbench_remote.server "$@"\n')
    assert "export PYTHONPATH=/opt/dacbench-remote" in files["env/90-environment.sh"][0]
    assert files["actions/test"][1] == 0o755 and "runscript.help" in files


def test_layout_without_runscript_or_test_says_so():
    recipe = parse_recipe_text("Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: x\n",
                               "r.def")
    files = layout.singularity_files(recipe, {})
    assert "no runscript" in files["runscript"][0]
    assert "test" not in files and "runscript.help" not in files


def _sourced(script: Path, variable: str, **env: str) -> str:
    """`variable` after sourcing `script` in a plain `sh` with only `env` set."""
    return subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "/bin/sh", "-c",
                           f'. "{script}"; printf %s "${variable}"'],
                          capture_output=True, text=True, check=True).stdout


def test_99_base_puts_the_gpu_library_dir_on_the_library_path(tmp_path):
    # As Apptainer's internal/pkg/build/sources/99-base.sh: --nv binds the host's driver
    # libraries into /.singularity.d/libs, so it must be on LD_LIBRARY_PATH.
    recipe = parse_recipe_text("Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: x\n",
                               "r.def")
    content, mode = layout.singularity_files(recipe, {})["env/99-base.sh"]
    script = tmp_path / "99-base.sh"
    script.write_text(content)
    assert mode == 0o755
    assert _sourced(script, "LD_LIBRARY_PATH") == "/.singularity.d/libs"
    assert _sourced(script, "LD_LIBRARY_PATH", LD_LIBRARY_PATH="/opt/lib") == \
        "/opt/lib:/.singularity.d/libs"
    assert _sourced(script, "PATH", PATH="/custom/bin") == "/custom/bin"
    assert _sourced(script, "PATH").startswith("/usr/local/sbin:")
    exported = subprocess.run(["env", "-i", "sh", "-c", f'. "{script}"; env'],
                              capture_output=True, text=True, check=True).stdout
    assert "LD_LIBRARY_PATH=/.singularity.d/libs" in exported.splitlines()


def test_inspect_attributes_read_an_image_as_apptainer_inspect_does(base_recipe, tmp_path):
    labels = layout.labels_for(base_recipe, arch="amd64", builder="b", build_date="d")
    singularity_d = tmp_path / ".singularity.d"
    for name, (content, _mode) in layout.singularity_files(base_recipe, labels).items():
        (singularity_d / name).parent.mkdir(parents=True, exist_ok=True)
        (singularity_d / name).write_text(content)
    # What %post appends through $SINGULARITY_ENVIRONMENT, and an env file inspect ignores.
    (singularity_d / "env" / "91-environment.sh").write_text("export FROM_POST=1\n\n")
    attributes = layout.inspect_attributes(singularity_d)
    assert set(attributes) == {"environment", "labels", "runscript", "test", "helpfile",
                               "deffile", "startscript"}
    assert attributes["environment"] == {
        "/.singularity.d/env/90-environment.sh":
            (singularity_d / "env" / "90-environment.sh").read_text().rstrip("\n"),
        "/.singularity.d/env/91-environment.sh": "export FROM_POST=1"}
    assert attributes["runscript"] == ("#!/bin/sh\n\n"
                                       '    exec python3 -m dacbench_remote.server "$@"')
    assert attributes["helpfile"].startswith("    DACBench") and \
        not attributes["helpfile"].endswith("\n")
    assert attributes["deffile"] == base_recipe.text.rstrip("\n")
    assert attributes["labels"] == labels
    assert attributes["startscript"] == "#!/bin/sh"
    # The stored object: Apptainer's JSON names, which `apptainer inspect --runscript`,
    # `--environment`, `--helpfile` and `run-help` read once the object exists.
    stored = json.loads(inspect_metadata(attributes))
    assert stored["type"] == "container"
    assert stored["data"]["attributes"]["runscript"] == attributes["runscript"]
    assert list(stored["data"]["attributes"]) == ["environment", "labels", "runscript", "test",
                                                  "helpfile", "deffile", "startscript"]
