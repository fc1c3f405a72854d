"""The recipe parser: every repo recipe parses, templating works, the unsupported fails by line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the backport dacbench-remote depends on there
    import tomli as tomllib

from dacbench_remote.errors import RecipeError
from dacbench_remote.images.recipe import (
    apply_templates,
    apptainer_argument_defaults,
    has_commented_templates,
    parse_recipe,
    parse_recipe_text,
    template_variables,
)

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "recipes").glob("*.def"))
FAMILY_RECIPES = [p for p in RECIPES if p.name != "template.def"]
AGENT_RECIPES = [p for p in FAMILY_RECIPES if "org.dacbench-remote.kind agent" in p.read_text()]
MIRROR = {"mirror": "http://mirror.invalid/debian"}

MINIMAL = """\
Bootstrap: debootstrap
OSVersion: bookworm
MirrorURL: {{ mirror }}
"""


def parse(text: str, build_args: dict[str, str] | None = None):
    return parse_recipe_text(text, "test.def", {**MIRROR, **(build_args or {})})


def test_repo_has_the_four_family_recipes_and_a_template():
    names = {p.name for p in RECIPES}
    assert {"dacbench-base.def", "dacbench-cmaes.def", "dacbench-sgd.def",
            "dacbench-theory.def", "template.def"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_repo_recipe_parses(path: Path):
    recipe = parse_recipe(path, MIRROR)
    assert recipe.bootstrap == "debootstrap"
    assert recipe.os_version == "bookworm"
    assert recipe.mirror_url == MIRROR["mirror"]
    assert {"python3", "libstdc++6"} <= set(recipe.include)
    # A benchmark image runs the server; an agent image the trainer, and names its agents.
    agent = path in AGENT_RECIPES
    runs = "dacbench_remote.rl" if agent else "dacbench_remote.server"
    assert f"exec python3 -m {runs}" in recipe.runscript
    assert any(f.source == "dacbench_remote" and f.destination.endswith("/dacbench_remote")
               for f in recipe.files)
    assert "PYTHONPATH=/opt/dacbench-remote" in recipe.environment
    assert recipe.labels["org.dacbench-remote.agents" if agent else "org.dacbench-remote.benchmarks"]
    assert recipe.help and recipe.test


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_repo_recipes_name_no_mirror_host(path: Path):
    # The mirror comes from a build argument or the host; a recipe never names one.
    text = path.read_text()
    assert "mirror" in template_variables(path)
    assert not re.search(r"https?://", text), "recipes must not contain URLs"


@pytest.mark.parametrize("path", FAMILY_RECIPES, ids=lambda p: p.name)
def test_family_recipes_pin_every_package(path: Path):
    recipe = parse_recipe(path, MIRROR)
    commands = recipe.post.replace("\\\n", " ").splitlines()
    requirements = [word for command in commands
                    if re.search(r"^\s*(pip_install|python3 \S*/pip\" install)\b", command)
                    for word in command.split()
                    if re.match(r"^[A-Za-z][\w.-]*[=<>!~]", word)]
    assert requirements, "no requirements found in %post"
    unpinned = [r for r in requirements if not re.match(r"^[A-Za-z][\w.-]*==[\w.+]+$", r)]
    assert not unpinned
    pinned = dict(r.split("==") for r in requirements)
    assert pinned["numpy"] == recipe.labels["org.dacbench-remote.numpy-version"]
    assert pinned["gymnasium"] == recipe.labels["org.dacbench-remote.gymnasium-version"]
    if path in AGENT_RECIPES:
        # Stable-Baselines3, torch and every dependency they and the client import.
        assert len(pinned) >= 15
        assert pinned["stable-baselines3"] == \
            recipe.labels["org.dacbench-remote.stable-baselines3-version"]
        assert pinned["torch"] == recipe.labels["org.dacbench-remote.torch-version"]
        return
    assert len(pinned) >= 20  # DACBench and every dependency, not just the top level
    # The DACBench of the catalog version(s) built from this recipe.
    assert pinned["dacbench"] == recipe.labels["org.dacbench-remote.dacbench-version"]
    assert {version.get("dacbench") for version in catalog_versions(path)} == {pinned["dacbench"]}


def catalog_families() -> list[dict]:
    return [tomllib.loads(toml.read_text()) for toml in (REPO / "benchmarks").glob("*.toml")]


def catalog_versions(recipe: Path) -> list[dict]:
    """The packaged catalog versions built from `recipe` (their own recipe, or the family's)."""
    return [version for family in catalog_families() for version in family.get("versions", [])
            if Path(version.get("recipe", family.get("recipe", ""))).name == recipe.name]


@pytest.mark.parametrize("path", FAMILY_RECIPES, ids=lambda p: p.name)
def test_family_recipes_match_the_catalog(path: Path):
    families = [family for family in catalog_families()
                for version in family.get("versions", [])
                if Path(version.get("recipe", family.get("recipe", ""))).name == path.name]
    if not families:
        pytest.fail(f"no catalog entry in benchmarks/ names recipes/{path.name}")
    labels = parse_recipe(path, MIRROR).labels
    if path in AGENT_RECIPES:
        assert families[0]["kind"] == "agent"
        assert labels["org.dacbench-remote.agents"].split(",") == families[0]["agents"]
        return
    assert labels["org.dacbench-remote.benchmarks"].split(",") == families[0]["benchmarks"]


def test_heavy_families_keep_their_dependencies_apart():
    posts = {p.stem: parse_recipe(p, MIRROR).post for p in FAMILY_RECIPES}
    assert "torch==" in posts["dacbench-sgd"]
    assert "modcma==" in posts["dacbench-cmaes"]
    for name in ("dacbench-base", "dacbench-theory"):
        assert "torch" not in posts[name] and "modcma" not in posts[name]
    assert "torch" not in posts["dacbench-cmaes"]


def test_sections_are_split_and_kept_as_written():
    recipe = parse(MINIMAL + """Include: python3, libstdc++6

%files
    src/pkg /opt/pkg
    # a comment
    data.txt
    "with space.txt" "/opt/with space.txt"

%post
    set -eu
    echo "50% done"

%environment
    export A=1

%runscript
    exec python3 "$@"

%labels
    org.example.name value with spaces
    org.example.empty

%help
    Some help.

%test
    true
""")
    assert recipe.include == ["python3", "libstdc++6"]
    assert [(f.source, f.destination, f.line) for f in recipe.files] == [
        ("src/pkg", "/opt/pkg", 7), ("data.txt", "/data.txt", 9),
        ("with space.txt", "/opt/with space.txt", 10)]
    assert recipe.post == '    set -eu\n    echo "50% done"'
    assert recipe.environment == "    export A=1"
    assert recipe.runscript == '    exec python3 "$@"'
    assert recipe.labels == {"org.example.name": "value with spaces", "org.example.empty": ""}
    assert recipe.help == "    Some help."
    assert recipe.test == "    true"


def test_templating_uses_argument_defaults_and_build_args_override_them():
    text = MINIMAL + """
%arguments
    version=1.0
    extra = two

%post
    echo {{version}} {{  extra  }} {{ mirror }}
"""
    assert parse(text).post == "    echo 1.0 two http://mirror.invalid/debian"
    recipe = parse(text, {"version": "2.5"})
    assert recipe.post == "    echo 2.5 two http://mirror.invalid/debian"
    assert recipe.arguments == {"version": "1.0", "extra": "two"}
    assert recipe.variables["version"] == "2.5"
    assert recipe.unused_build_args == ()


def test_unused_build_args_are_reported_not_ignored():
    recipe = parse(MINIMAL, {"typo_version": "1"})
    assert recipe.unused_build_args == ("typo_version",)


def test_the_stored_text_is_the_original_recipe():
    recipe = parse(MINIMAL)
    assert "{{ mirror }}" in recipe.text


def test_sgd_torch_index_is_a_build_argument_with_an_empty_default():
    path = REPO / "recipes" / "dacbench-sgd.def"
    default = parse_recipe(path, MIRROR)
    assert default.arguments == {"torch_index_url": ""}
    assert 'torch_index=""' in default.post
    cpu = parse_recipe(path, {**MIRROR, "torch_index_url": "http://torch.invalid/cpu"})
    assert 'torch_index="http://torch.invalid/cpu"' in cpu.post


@pytest.mark.parametrize(("text", "line", "words"), [
    (MINIMAL + "%setup\n    touch x\n", 4, ["%setup", "not supported", "%post"]),
    (MINIMAL + "%startscript\n    x\n", 4, ["%startscript", "not supported"]),
    (MINIMAL + "%appinstall foo\n    x\n", 4, ["%appinstall", "not supported"]),
    (MINIMAL + "%foo\n", 4, ["unknown section %foo"]),
    (MINIMAL + "%post -c /bin/bash\n    x\n", 4, ["section options", "%post -c /bin/bash"]),
    (MINIMAL + "%post\n    a\n%post\n    b\n", 6, ["%post appears twice", "line 4"]),
    (MINIMAL + "%\n", 4, ["malformed section"]),
    ("Bootstrap: docker\nOSVersion: x\nMirrorURL: y\n", 1, ["Bootstrap: docker", "only 'debootstrap'"]),
    (MINIMAL + "From: debian\n", 4, ["header key 'From'", "not supported"]),
    (MINIMAL + "Stage: one\n", 4, ["header key 'Stage'"]),
    (MINIMAL + "\nBootstrap: debootstrap\n", 5, ["multi-stage"]),
    (MINIMAL + "OSVersion: trixie\n", 4, ["OSVersion appears twice"]),
    (MINIMAL + "just words\n", 4, ["expected a header line 'Key: value'"]),
    ("OSVersion: bookworm\n", 1, ["missing 'Bootstrap: debootstrap'"]),
    ("Bootstrap: debootstrap\nMirrorURL: {{ mirror }}\n", 1, ["needs a non-empty OSVersion"]),
    (MINIMAL + "%files\n    a b c\n", 5, ["SOURCE [DESTINATION]", "3 words"]),
    (MINIMAL + "%files\n    *.py /opt/\n", 5, ["wildcards"]),
    (MINIMAL + "%files\n    a /opt/../etc/a\n", 5, ["must not contain '..'"]),
    (MINIMAL + "%files\n    'unclosed /opt\n", 5, ["cannot split"]),
    (MINIMAL + "%labels\n    a 1\n    a 2\n", 6, ["label 'a' is defined twice"]),
    (MINIMAL + "%arguments\n    not an assignment\n", 5, ["NAME=VALUE"]),
    (MINIMAL + "%arguments\n    a=1\n    a=2\n", 6, ["argument 'a' is defined twice"]),
    (MINIMAL + "%post\n    echo {{ undefined_thing }}\n", 5,
     ["undefined_thing", "--build-arg undefined_thing=VALUE"]),
])
def test_unsupported_or_bad_lines_name_file_line_and_feature(text: str, line: int,
                                                            words: list[str]):
    with pytest.raises(RecipeError) as caught:
        parse(text)
    message = str(caught.value)
    assert message.startswith(f"test.def:{line}: "), message
    for word in words:
        assert word in message, message


def test_missing_template_value_for_the_mirror_names_the_build_arg():
    with pytest.raises(RecipeError, match=r"test.def:3: .*\{\{ mirror \}\}.*--build-arg mirror="):
        parse_recipe_text(MINIMAL, "test.def")


@pytest.mark.parametrize(("args", "words"), [
    ({"bad name": "x"}, ["'bad name'", "not a valid identifier"]),
    ({"mirror": "a\nb"}, ["'mirror'", "newline"]),
])
def test_bad_build_args_are_named(args: dict[str, str], words: list[str]):
    with pytest.raises(RecipeError) as caught:
        parse_recipe_text(MINIMAL, "test.def", args)
    for word in words:
        assert word in str(caught.value)


def test_unreadable_recipe_names_the_path(tmp_path: Path):
    missing = tmp_path / "nope.def"
    with pytest.raises(RecipeError, match=re.escape(f"{missing}: cannot read recipe")):
        parse_recipe(missing, MIRROR)


def test_template_variables_lists_what_a_recipe_uses():
    assert template_variables(Path("x.def"), MINIMAL + "%post\n {{a}} {{ b }}\n") == {
        "mirror", "a", "b"}


# --- templating as Apptainer's internal/pkg/build/args/reader.go does it (read at 1.5.3+) -------

# The comment case of Apptainer's own reader test (args_test.go, "ok case with variables defined
# in comment lines"), byte for byte: {{ }} after a `#` that is not a shebang's is left alone.
APPTAINER_COMMENT_CASE_IN = (
    "\n\t\t\t%arguments\n"
    "\t\t\t\tOS_VER=1 #  comment line {{ OS_VER }}\n"
    "\t\t\t%post\n"
    "\t\t\t    \t# comment\n"
    "\t\t\t\t#an\n"
    "\t\t\t\t#!/bin/{{ BASH }}\n"
    "\t\t\t\tapt install {{ OS_VER }}#comment {{ OS_VER }}\n"
    "\t\t\t\t#some other comment {{ OS_VER }}\n"
    "\t\t\t\t#should not be replaced as well \n"
    "\t\t\t")
APPTAINER_COMMENT_CASE_OUT = (APPTAINER_COMMENT_CASE_IN
                              .replace("#!/bin/{{ BASH }}", "#!/bin/csh")
                              .replace("apt install {{ OS_VER }}#", "apt install 1#"))


def test_templates_in_comments_are_left_as_apptainers_reader_leaves_them():
    templated = apply_templates(APPTAINER_COMMENT_CASE_IN, "t.def", {},
                                {"OS_VER": "1", "BASH": "csh"})
    assert templated.text == APPTAINER_COMMENT_CASE_OUT
    assert templated.unused_build_args == ()
    assert has_commented_templates(APPTAINER_COMMENT_CASE_IN)


def test_an_undefined_name_in_a_comment_is_no_error_and_uses_nothing():
    text = MINIMAL + "%post\n    # {{ mirror }} and {{ never_defined }}\n    echo '#x' {{ quirk }}\n"
    recipe = parse(text)
    assert recipe.post == "    # {{ mirror }} and {{ never_defined }}\n    echo '#x' {{ quirk }}"
    # Only the header's {{ mirror }} counts; `'#x'` before {{ quirk }} reads as a comment to
    # Apptainer too (its regexp searches the whole text before the braces).
    assert template_variables(Path("t.def"), text) == {"mirror"}
    assert template_variables(Path("t.def"), "# only a comment {{ mirror }}\n") == set()


def test_a_hash_right_before_the_braces_or_a_shebang_is_no_comment():
    assert apply_templates("#{{ a }}\n#!{{ a }}\n", "t.def", {}, {"a": "1"}).text == "#1\n#!1\n"


def test_argument_values_name_other_arguments_and_are_templated_in_place():
    text = MINIMAL + "%arguments\n    outer={{ inner }}-x\n%post\n    echo {{ outer }}\n"
    # The %arguments line is part of the text Apptainer templates, so `inner` is used there;
    # `outer` gets its default with the nested name replaced once.
    templated = apply_templates(text, "t.def", {"outer": "{{ inner }}-x"},
                                {"mirror": "m", "inner": "v", "spare": "s"})
    assert "    outer=v-x\n" in templated.text and "echo v-x" in templated.text
    assert templated.unused_build_args == ("spare",)


def test_names_may_start_with_a_digit_as_go_word_characters_allow():
    assert apply_templates("{{ 1st }} {{ é }}", "t.def", {"1st": "one"}, {}).text == "one {{ é }}"


def test_malformed_braces_are_left_alone_as_apptainer_leaves_them():
    recipe = parse(MINIMAL + "%post\n    docker inspect --format '{{.Id}}' x; echo {{ broken\n")
    assert recipe.post == "    docker inspect --format '{{.Id}}' x; echo {{ broken"


def test_argument_defaults_as_apptainer_reads_them_for_recipes_only_it_builds():
    text = ("Bootstrap: docker\nFrom: debian\n%setup\n    a=b\n%arguments\n    v = 1 \n"
            "    # c=d\n    not a pair\n%post\n    x=y\n")
    assert apptainer_argument_defaults(text) == {"v": "1"}
