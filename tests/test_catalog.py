"""The catalog: resolving benchmark + experiment id to one pinned image, overrides, bad files."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from dacbench_remote.errors import BadConfig, ImageNotFound, UnknownBenchmark
from dacbench_remote.images.catalog import (
    Catalog,
    benchmark_key,
    packaged_catalog_dir,
    packaged_root,
)

REPO = Path(__file__).resolve().parent.parent
A = "a" * 64
B = "b" * 64
C = "c" * 64


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


TOY = f"""
family = "toy"
recipe = "recipes/toy.def"
benchmarks = ["Luby", "ToySGD"]

[[versions]]
experiment = "exp:0.01"
image = "toy-0.01.sif"
sha256 = "{A}"
sources = ["https://example.invalid/toy-0.01.sif", "images/toy-0.01.sif"]
default = true
dacbench = "0.5.6"

[[versions]]
experiment = "exp:0.02"
image = "toy-0.02.sif"
sha256 = "sha256:{B.upper()}"
default = true

[[versions]]
experiment = "exp:0.03-rc"
image = "toy-0.03.sif"
sha256 = ""
"""


@pytest.fixture
def catalog_root(tmp_path: Path) -> Path:
    write(tmp_path / "cat" / "benchmarks", "toy.toml", TOY)
    return tmp_path / "cat"


def load(*dirs: Path) -> Catalog:
    return Catalog.load(list(dirs), packaged=False)


# -- the packaged catalog ------------------------------------------------------------------------


def test_packaged_catalog_serves_the_dacbench_benchmarks():
    catalog = Catalog.load()
    assert catalog.benchmarks() == [
        "CMAES", "FunctionApproximation", "Luby", "SGD", "Theory", "ToySGD"
    ]
    luby = catalog.resolve("Luby")
    assert (luby.family, luby.experiment, luby.image) == ("dacbench-base", "exp:0.01",
                                                          "dacbench-base-0.01.sif")
    assert luby.recipe == REPO / "recipes" / "dacbench-base.def"
    assert luby.dacbench == "0.5.6"
    for name, family in [("CMAES", "dacbench-cmaes"), ("SGD", "dacbench-sgd"),
                         ("Theory", "dacbench-theory")]:
        resolved = catalog.resolve(name)
        assert resolved.family == family
        assert resolved.recipe == REPO / "recipes" / f"{family}.def"


def test_packaged_catalog_has_the_dacbench_030_version_with_its_own_recipe():
    catalog = Catalog.load()
    for name in ("FunctionApproximation", "Luby", "ToySGD"):
        old = catalog.resolve(name, "exp:dacbench-0.3.0")
        assert (old.family, old.image, old.dacbench) == (
            "dacbench-base", "dacbench-base-dacbench-0.3.0.sif", "0.3.0")
        assert old.recipe == REPO / "recipes" / "dacbench-base-0.3.0.def"
        assert old.recipe.is_file()
        assert not old.default
        assert catalog.resolve(name).experiment == "exp:0.01"  # the default stays 0.5.6


def test_a_version_recipe_overrides_the_familys_relative_to_the_catalog_root(tmp_path):
    body = ("family = 'x'\nrecipe = 'recipes/new.def'\nbenchmarks = ['Luby']\n"
            "[[versions]]\nexperiment = 'exp:old'\nimage = 'x-old.sif'\nsha256 = ''\n"
            "recipe = 'recipes/old.def'\n"
            "[[versions]]\nexperiment = 'exp:new'\nimage = 'x-new.sif'\nsha256 = ''\n")
    write(tmp_path / "cat" / "benchmarks", "x.toml", body)
    catalog = load(tmp_path / "cat" / "benchmarks")
    assert catalog.resolve("Luby", "exp:old").recipe == tmp_path / "cat" / "recipes" / "old.def"
    assert catalog.resolve("Luby", "exp:new").recipe == tmp_path / "cat" / "recipes" / "new.def"


def test_a_version_recipe_lets_a_family_without_one_build_that_version(tmp_path):
    body = ("family = 'x'\nbenchmarks = ['Luby']\n[[versions]]\nexperiment = 'exp:1'\n"
            "image = 'x-1.sif'\nsha256 = ''\nrecipe = '/abs/one.def'\ndefault = true\n")
    write(tmp_path / "a", "x.toml", body)
    assert load(tmp_path / "a").resolve("Luby").recipe == Path("/abs/one.def")


def test_a_version_recipe_must_be_a_string(tmp_path):
    body = ("family = 'x'\nbenchmarks = ['Luby']\n[[versions]]\nexperiment = 'exp:1'\n"
            "image = 'x-1.sif'\nsha256 = ''\nrecipe = 3\n")
    write(tmp_path / "a", "x.toml", body)
    with pytest.raises(BadConfig, match=r"`versions\[0\]\.recipe`"):
        load(tmp_path / "a")


def test_packaged_catalog_is_the_repository_and_its_installed_copy_matches():
    assert packaged_root() == REPO
    assert packaged_catalog_dir() == REPO / "benchmarks"
    # The copy a wheel carries (symlinks in the source tree) must show the same files.
    copy = REPO / "dacbench_remote" / "images" / "packaged"
    assert sorted(p.name for p in (copy / "benchmarks").glob("*.toml")) == sorted(
        p.name for p in (REPO / "benchmarks").glob("*.toml")
    )
    assert (copy / "recipes").resolve() == (REPO / "recipes").resolve()


@pytest.mark.parametrize("name", ["Luby", "luby", "LubyBenchmark", "LUBYBENCHMARK",
                                  "dacbench.benchmarks.LubyBenchmark"])
def test_benchmark_names_are_matched_loosely(name):
    assert benchmark_key(name) == "luby"
    assert Catalog.load().resolve(name).benchmark == "Luby"


def test_benchmark_key_keeps_a_name_that_is_only_benchmark():
    assert benchmark_key("Benchmark") == "benchmark"
    assert benchmark_key("toy-sgd") == benchmark_key("ToySGDBenchmark") == "toysgd"


# -- resolving -----------------------------------------------------------------------------------


def test_no_experiment_means_the_newest_default(catalog_root):
    resolved = load(catalog_root / "benchmarks").resolve("ToySGD")
    assert resolved.experiment == "exp:0.02"
    assert resolved.sha256 == B  # normalised: prefix dropped, lower case
    assert resolved.sources == ()


def test_explicit_experiment_pins_exactly_that_image(catalog_root):
    catalog = load(catalog_root / "benchmarks")
    resolved = catalog.resolve("Luby", "exp:0.01")
    assert (resolved.image, resolved.sha256, resolved.dacbench) == ("toy-0.01.sif", A, "0.5.6")
    assert resolved.pinned
    # Relative recipe and local sources are relative to the catalog root.
    assert resolved.recipe == catalog_root / "recipes" / "toy.def"
    assert resolved.sources == ("https://example.invalid/toy-0.01.sif",
                                str(catalog_root / "images" / "toy-0.01.sif"))
    assert catalog.resolve("Luby", "0.01") == resolved  # "exp:" may be left out
    unpublished = catalog.resolve("luby", "exp:0.03-rc")
    assert not unpublished.pinned and unpublished.sha256 == ""
    assert resolved.provenance() == {
        "benchmark": "Luby", "family": "toy", "experiment": "exp:0.01", "image": "toy-0.01.sif",
        "catalog_sha256": A, "dacbench": "0.5.6",
    }


def test_versions_lists_every_version_oldest_first(catalog_root):
    versions = load(catalog_root / "benchmarks").versions("Luby")
    assert [v.experiment for v in versions] == ["exp:0.01", "exp:0.02", "exp:0.03-rc"]
    assert [v.default for v in versions] == [True, True, False]


def test_unknown_benchmark_lists_the_known_ones(catalog_root):
    with pytest.raises(UnknownBenchmark) as info:
        load(catalog_root / "benchmarks").resolve("Sokoban")
    message = str(info.value)
    assert "'Sokoban' is not in the catalog" in message
    assert "known benchmarks: Luby, ToySGD" in message
    assert str(catalog_root / "benchmarks") in message


def test_unknown_experiment_lists_the_known_ones(catalog_root):
    with pytest.raises(ImageNotFound) as info:
        load(catalog_root / "benchmarks").resolve("Luby", "exp:9.99")
    assert str(info.value) == (
        "no image for benchmark Luby at experiment 'exp:9.99'; known experiments for Luby: "
        "exp:0.01 (default), exp:0.02 (default), exp:0.03-rc"
    )


def test_no_default_version_asks_for_an_experiment(tmp_path):
    write(tmp_path / "b", "x.toml", f"""
        family = "x"
        benchmarks = ["Luby"]
        [[versions]]
        experiment = "exp:1"
        image = "x-1.sif"
        sha256 = "{A}"
    """)
    with pytest.raises(ImageNotFound, match=r"no version of Luby is marked default; pick an "
                                            r"experiment: exp:1"):
        load(tmp_path / "b").resolve("Luby")


# -- user catalogs override the packaged one -------------------------------------------------------


def test_user_catalog_adds_a_version_to_a_packaged_family(tmp_path):
    write(tmp_path / "user", "mine.toml", f"""
        family = "dacbench-base"
        [[versions]]
        experiment = "exp:0.02"
        image = "dacbench-base-0.02.sif"
        sha256 = "{C}"
        sources = ["https://mirror.invalid/dacbench-base-0.02.sif"]
        default = true
    """)
    catalog = Catalog.load([tmp_path / "user"])
    assert catalog.resolve("Luby").experiment == "exp:0.02"
    assert catalog.resolve("FunctionApproximation").sha256 == C
    assert catalog.resolve("Luby", "exp:0.01").image == "dacbench-base-0.01.sif"  # still there
    assert catalog.resolve("Luby").recipe == REPO / "recipes" / "dacbench-base.def"  # inherited
    assert catalog.resolve("CMAES").family == "dacbench-cmaes"  # untouched


def test_user_catalog_replaces_a_version_by_experiment_id(catalog_root, tmp_path):
    write(tmp_path / "user" / "benchmarks", "fix.toml", f"""
        family = "toy"
        [[versions]]
        experiment = "exp:0.01"
        image = "toy-0.01-fixed.sif"
        sha256 = "{C}"
        default = false
    """)
    catalog = load(catalog_root / "benchmarks", tmp_path / "user" / "benchmarks")
    assert catalog.resolve("Luby", "exp:0.01").sha256 == C
    assert [v.experiment for v in catalog.versions("Luby")] == ["exp:0.01", "exp:0.02",
                                                                 "exp:0.03-rc"]


def test_a_later_family_wins_a_benchmark_it_shares(catalog_root, tmp_path):
    write(tmp_path / "user", "other.toml", f"""
        family = "other"
        benchmarks = ["LubyBenchmark"]
        [[versions]]
        experiment = "exp:7"
        image = "other-7.sif"
        sha256 = "{C}"
        default = true
    """)
    catalog = load(catalog_root / "benchmarks", tmp_path / "user")
    assert catalog.resolve("Luby").family == "other"
    assert catalog.resolve("Luby", "exp:0.01").family == "toy"
    assert catalog.resolve("ToySGD").family == "toy"


# -- invalid catalog files -------------------------------------------------------------------------


VALID_VERSION = f"""
[[versions]]
experiment = "exp:1"
image = "x-1.sif"
sha256 = "{A}"
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("family = 'x'\nbenchmarks = [", "not valid TOML"),
        ("benchmarks = ['Luby']\n" + VALID_VERSION, "`family` is missing"),
        ("family = 'x'\nbenchmark = ['Luby']\n" + VALID_VERSION,
         "`benchmark` is not a catalog key"),
        ("family = 'x'\nbenchmarks = []\n" + VALID_VERSION,
         "`benchmarks` must be a non-empty list"),
        ("family = 'x'\nbenchmarks = ['Luby']\n" + VALID_VERSION.replace(A, "abc"),
         "`versions[0].sha256` = 'abc' is not a sha256"),
        ("family = 'x'\nbenchmarks = ['Luby']\n" + VALID_VERSION + "sources = ['ftp://h/x.sif']",
         "`versions[0].sources`: unsupported source 'ftp://h/x.sif'"),
        ("family = 'x'\nbenchmarks = ['Luby']\n" + VALID_VERSION.replace(f'"{A}"', '""')
         + "sources = ['https://h/x.sif']", "`versions[0].sha256` is empty but sources are listed"),
        ("family = 'x'\nbenchmarks = ['Luby']\n" + VALID_VERSION.replace("x-1.sif", "sub/x.sif"),
         "`versions[0].image` = 'sub/x.sif' must be a plain file name"),
        ("family = 'x'\nbenchmarks = ['Luby']\n" + VALID_VERSION + "default = 'yes'",
         "`versions[0].default` must be true or false"),
        ("family = 'x'\nbenchmarks = ['Luby']\n" + VALID_VERSION + "sha = 1",
         "`versions[0].sha` is not a version key"),
        ("family = 'x'\nbenchmarks = ['Luby']\n" + VALID_VERSION.replace('image = "x-1.sif"\n', ""),
         "`versions[0].image` is missing"),
        ("family = 'x'\nbenchmarks = ['Luby']\n" + VALID_VERSION + VALID_VERSION,
         "`versions[1].experiment` = 'exp:1' repeats versions[0]"),
        ("family = 'x'\nbenchmarks = ['Luby']\n" + VALID_VERSION.replace("exp:1", "exp 1"),
         "must not contain spaces or '@'"),
        ("family = 'x'\nbenchmarks = ['Luby']\nversions = 'exp:1'", "`versions` must be an array"),
    ],
)
def test_invalid_catalog_file_names_file_and_key(tmp_path, text, expected):
    path = write(tmp_path / "bad", "broken.toml", text + "\n")
    with pytest.raises(BadConfig) as info:
        load(tmp_path / "bad")
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_family_without_benchmarks_or_versions_is_rejected(tmp_path):
    path = write(tmp_path / "a", "x.toml", "family = 'x'\n" + VALID_VERSION)
    with pytest.raises(BadConfig, match="`benchmarks` is missing for family 'x'") as info:
        load(tmp_path / "a")
    assert str(path) in str(info.value)
    write(tmp_path / "b", "y.toml", "family = 'y'\nbenchmarks = ['Luby']\n")
    with pytest.raises(BadConfig, match="family 'y' has no \\[\\[versions\\]\\]"):
        load(tmp_path / "b")


def test_unpublished_version_needs_a_recipe(tmp_path):
    write(tmp_path / "a", "x.toml",
          "family = 'x'\nbenchmarks = ['Luby']\n" + VALID_VERSION.replace(f'"{A}"', '""'))
    with pytest.raises(BadConfig, match="`sha256` of 'exp:1' is empty and neither it nor family "
                                        "'x' has a `recipe`: it can be neither downloaded nor "
                                        "built"):
        load(tmp_path / "a")


def test_same_family_twice_in_one_directory_is_rejected(tmp_path):
    body = "family = 'x'\nbenchmarks = ['Luby']\n" + VALID_VERSION
    write(tmp_path / "a", "one.toml", body)
    two = write(tmp_path / "a", "two.toml", body)
    with pytest.raises(BadConfig, match=r"`family` = 'x' is also defined in .*one\.toml") as info:
        load(tmp_path / "a")
    assert str(two) in str(info.value)


def test_image_names_must_be_unique_across_digests(tmp_path):
    write(tmp_path / "a", "x.toml", "family = 'x'\nbenchmarks = ['Luby']\n" + VALID_VERSION)
    write(tmp_path / "a", "y.toml", "family = 'y'\nbenchmarks = ['ToySGD']\n"
          + VALID_VERSION.replace(A, B))
    with pytest.raises(BadConfig, match=r"`image` 'x-1\.sif' of 'exp:1' is also used by 'exp:1'"):
        load(tmp_path / "a")


def test_missing_catalog_directory_is_named(tmp_path):
    with pytest.raises(BadConfig, match=f"catalog directory {tmp_path / 'nowhere'} does not exist"):
        load(tmp_path / "nowhere")


# -- agent families --------------------------------------------------------------------------------

AGENTS = """
family = "agents"
kind = "agent"
recipe = "recipes/agents.def"
agents = ["PPO", "DQN"]
wheelhouse = "wheels"

[[versions]]
experiment = "exp:0.01"
image = "agents-0.01.sif"
sha256 = ""
default = true
wheelhouse = ["/opt/extra-wheels"]
"""


def test_packaged_catalog_has_a_pinned_sb3_agent_family():
    catalog = Catalog.load()
    assert catalog.agents() == ["A2C", "DDPG", "DQN", "PPO", "SAC", "TD3"]
    ppo = catalog.resolve_agent("PPO")
    assert (ppo.kind, ppo.family, ppo.experiment, ppo.image) == (
        "agent", "agent-sb3", "exp:0.01", "agent-sb3-0.01.sif")
    assert ppo.recipe == REPO / "recipes" / "agent-sb3.def" and ppo.recipe.is_file()
    # Pinned like the benchmark families (scripts/pin_catalog.py); test_packaged_pins checks
    # that the recipe reproduces the pin.
    assert ppo.pinned and re.fullmatch("[0-9a-f]{64}", ppo.sha256) and ppo.inputs
    assert ppo.provenance()["agent"] == "PPO" and "benchmark" not in ppo.provenance()
    assert "PPO" not in catalog.benchmarks()


def test_agents_resolve_apart_from_benchmarks_with_their_wheelhouse(tmp_path):
    write(tmp_path / "cat" / "benchmarks", "agents.toml", AGENTS)
    catalog = load(tmp_path / "cat" / "benchmarks")
    dqn = catalog.resolve_agent("dqn", "0.01")
    assert (dqn.benchmark, dqn.kind, dqn.image) == ("DQN", "agent", "agents-0.01.sif")
    # The version's own first, then the family's (relative to the catalog root).
    assert dqn.wheelhouse == (Path("/opt/extra-wheels"), tmp_path / "cat" / "wheels")
    with pytest.raises(UnknownBenchmark, match="benchmark 'PPO' is not in the catalog; known "
                                               r"benchmarks: \(none\)"):
        catalog.resolve("PPO")
    with pytest.raises(UnknownBenchmark, match="agent 'SAC' is not in the catalog; known agents: "
                                               "DQN, PPO"):
        catalog.resolve_agent("SAC")
    with pytest.raises(ImageNotFound, match="no image for agent PPO at experiment 'exp:9'"):
        catalog.resolve_agent("PPO", "exp:9")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (AGENTS.replace('kind = "agent"', 'kind = "robot"'),
         "`kind` = 'robot' must be one of benchmark, agent"),
        (AGENTS.replace('agents = ["PPO", "DQN"]', 'benchmarks = ["Luby"]'),
         "`benchmarks`: a family of kind 'agent' lists agents, not benchmarks"),
        (AGENTS.replace('kind = "agent"\n', ""),
         "`agents`: a family of kind 'benchmark' lists benchmarks, not agents; set kind"),
        (AGENTS.replace('agents = ["PPO", "DQN"]', ""), "`agents` is missing for family 'agents'"),
        (AGENTS.replace('wheelhouse = "wheels"', "wheelhouse = 3"),
         "`wheelhouse` must be a directory path or a list of them, got 3"),
    ],
)
def test_invalid_agent_family_names_the_key(tmp_path, text, expected):
    write(tmp_path / "bad", "agents.toml", text)
    with pytest.raises(BadConfig, match=re.escape(expected)):
        load(tmp_path / "bad")


def test_a_user_catalog_cannot_turn_a_benchmark_family_into_an_agent_family(catalog_root, tmp_path):
    write(tmp_path / "mine", "toy.toml", 'family = "toy"\nkind = "agent"\nagents = ["PPO"]\n')
    with pytest.raises(BadConfig, match=r"family 'toy' is of kind 'benchmark' in .*, not 'agent'"):
        load(catalog_root / "benchmarks", tmp_path / "mine")
