"""Where an image keeps its runscript, environment, labels and test (as Apptainer does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dacbench_remote.images import layout
from dacbench_remote.images.recipe import parse_recipe, parse_recipe_text

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def base_recipe():
    return parse_recipe(REPO / "recipes" / "dacbench-base.def",
                        {"mirror": "http://mirror.invalid/debian"})


def test_layout_labels_and_files(base_recipe):
    labels = layout.labels_for(base_recipe, builder="dacbench-remote 0.1.0", build_date="d")
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
