"""The catalog in a non-editable install: the wheel must carry benchmarks/ and recipes/."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_as

pytestmark = pytest.mark.integration

PROBE = """
import json
from dacbench_remote.images.catalog import Catalog, packaged_root
resolved = Catalog.load().resolve("Luby")
print(json.dumps({"root": str(packaged_root()), "family": resolved.family,
                  "recipe": str(resolved.recipe), "recipe_exists": resolved.recipe.is_file(),
                  "benchmarks": Catalog.load().benchmarks()}))
"""


def test_installed_package_finds_its_catalog_and_recipes(unprivileged_user, user_python):
    result = run_as(unprivileged_user, [user_python, "-c", PROBE])
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert "site-packages" in found["root"], found  # the installed copy, not the checkout
    assert found["family"] == "dacbench-base"
    assert found["recipe"].endswith("recipes/dacbench-base.def") and found["recipe_exists"]
    assert "CMAES" in found["benchmarks"] and "Luby" in found["benchmarks"]
