"""The packaged catalog's pins are current: each recipe built in this run reproduces its pin.

A pin records the sha256 a version's recipe builds to and the inputs it was built from. When
this fails, the recipe or `dacbench_remote/` (copied into every image) changed since the pin,
or the package mirrors moved on: run `python scripts/pin_catalog.py` (as root) and commit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dacbench_remote.images.catalog import Catalog
from dacbench_remote.images.manifest import MANIFEST_NAME
from dacbench_remote.images.sif import SifImage
from tests.conftest import IMAGE_TIMEOUT
from tests.integration.conftest import NATIVE_BUILDER_NAME

pytestmark = [pytest.mark.integration, pytest.mark.timeout(IMAGE_TIMEOUT)]  # builds images

# The versions the suite builds (dacbench-sgd needs torch and torchvision, not reachable here).
PINNED = [("Luby", "exp:0.01"), ("Luby", "exp:dacbench-0.3.0"), ("CMAES", "exp:0.01"),
          ("Theory", "exp:0.01")]


@pytest.mark.parametrize(("benchmark", "experiment"), PINNED)
def test_the_recipe_reproduces_the_packaged_pin(benchmark: str, experiment: str,
                                                recipe_image_info):
    resolved = Catalog.load([]).resolve(benchmark, experiment)
    assert resolved.sha256 and resolved.inputs, (
        f"{resolved.catalog_file}: {experiment} pins no sha256/inputs; run scripts/pin_catalog.py")
    built = recipe_image_info(Path(resolved.recipe).stem)
    # The pins are made by our native builder (scripts/pin_catalog.py); checked with it, named.
    assert built["builder"] == NATIVE_BUILDER_NAME, built["builder"]
    manifest = SifImage.open(built["path"]).json_object(MANIFEST_NAME)
    hint = "run `python scripts/pin_catalog.py` as root and commit the catalog"
    assert manifest["inputs_sha256"] == resolved.inputs, (
        f"{resolved.recipe.name} or dacbench_remote/ changed since {experiment} was pinned; {hint}")
    assert built["sha256"] == resolved.sha256, (
        f"same inputs, other image: the package mirrors serve other versions than at pinning "
        f"time (`dacbench-remote build --verify {benchmark}@{experiment}` lists them); {hint}")


def test_the_agent_recipe_reproduces_the_packaged_pin(agent_image_info: dict):
    """The agent image, built from the tests' wheelhouse (as scripts/pin_catalog.py pins it)."""
    resolved = Catalog.load([]).resolve_agent("PPO", "exp:0.01")
    assert resolved.sha256 and resolved.inputs, (
        f"{resolved.catalog_file}: exp:0.01 pins no sha256/inputs; run scripts/pin_catalog.py")
    manifest = SifImage.open(agent_image_info["path"]).json_object(MANIFEST_NAME)
    hint = "run `python scripts/pin_catalog.py` as root and commit the catalog"
    assert manifest["inputs_sha256"] == resolved.inputs, (
        f"{resolved.recipe.name} or dacbench_remote/ changed since the pin; {hint}")
    assert agent_image_info["sha256"] == resolved.sha256, (
        "same inputs, other image: the package mirrors (or the wheelhouse's wheels) differ from "
        f"pinning time; {hint}")
