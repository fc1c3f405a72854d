"""Unit tests of the registry client's pure parts, credential lookup, publishing and catalog edits."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from dacbench_remote.errors import BadConfig, CorruptImage, RegistryError
from dacbench_remote.images import catalog_edit
from dacbench_remote.images.catalog import parse_catalog_file
from dacbench_remote.images.credentials import Credentials, find_credentials
from dacbench_remote.images.download import SourceFailed
from dacbench_remote.images.publish import manifest_for, publish, push_sif, read_chunks
from dacbench_remote.images.registry import (
    CONFIG_TYPE,
    DOCKER_MANIFEST_TYPE,
    LAYER_TYPE,
    LEGACY_LAYER_TYPE,
    MANIFEST_TYPE,
    Reference,
    RegistryClient,
    is_loopback,
    parse_challenge,
    parse_reference,
    platform_entry,
    validate_manifest,
)
from dacbench_remote.images.sources import fetch_source

SHA_A = "a" * 64
SHA_B = "b" * 64
REF = Reference("registry.example.org", "dacbench/base", "0.02")


# --- references --------------------------------------------------------------------------------

@pytest.mark.parametrize("uri, expected", [
    ("oras://registry.example.org/dacbench/base:0.02",
     Reference("registry.example.org", "dacbench/base", "0.02")),
    ("oras://127.0.0.1:5000/base", Reference("127.0.0.1:5000", "base", "latest")),
    (f"oras://Registry.Example.org/a/b/c@sha256:{SHA_A}",
     Reference("registry.example.org", "a/b/c", "", f"sha256:{SHA_A}")),
    ("oras://[::1]:5000/x/y:v1.0-rc_2", Reference("[::1]:5000", "x/y", "v1.0-rc_2")),
])
def test_parse_reference(uri, expected):
    ref = parse_reference(uri)
    assert ref == expected
    assert ref.reference == (expected.digest or expected.tag)
    assert parse_reference(str(ref)) == ref  # str() writes it back in the same form


@pytest.mark.parametrize("uri, problem", [
    ("docker://registry.example.org/x:1", "not an OCI reference"),
    ("oras://registry.example.org", "not an OCI reference"),
    ("oras://registry.example.org/Upper/Case:1", "not a valid repository name"),
    ("oras://registry.example.org/x@sha256:abc", "64 lowercase hex digits"),
    ("oras://registry.example.org/x:bad!tag", "not a valid tag"),
])
def test_parse_reference_errors_name_the_problem(uri, problem):
    with pytest.raises(RegistryError, match=problem) as info:
        parse_reference(uri)
    assert "oras://" in str(info.value)


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1:5000", True), ("127.5.0.1", True), ("localhost:5000", True), ("[::1]:80", True),
    ("::1", True), ("registry.example.org", False), ("10.0.0.1:5000", False),
    ("[2001:db8::1]:5000", False), ("localhost.example.org", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_plain_http_only_for_loopback_or_insecure(monkeypatch):
    monkeypatch.delenv("DACBENCH_REMOTE_INSECURE_REGISTRIES", raising=False)
    remote = RegistryClient(REF)
    assert remote.root.startswith("https://registry.example.org/v2/dacbench/base/")
    with pytest.raises(RegistryError, match=r"refusing plain HTTP to 10\.0\.0\.1.*--insecure"):
        remote.check_url("http://10.0.0.1/token")
    remote.check_url("http://127.0.0.1:9/token")  # loopback realms are fine
    insecure = RegistryClient(REF, insecure=True)
    assert insecure.root.startswith("http://registry.example.org/")
    insecure.check_url("http://10.0.0.1/token")
    local = RegistryClient(Reference("127.0.0.1:5000", "x", "1"))
    assert local.root == "http://127.0.0.1:5000/v2/x/"


def test_insecure_registries_from_the_environment(monkeypatch):
    monkeypatch.setenv("DACBENCH_REMOTE_INSECURE_REGISTRIES", "a.example.org, Registry.example.org")
    assert RegistryClient(REF).root.startswith("http://registry.example.org/")
    other = Reference("other.example.org", "x", "1")
    assert RegistryClient(other).root.startswith("https://")


# --- WWW-Authenticate ----------------------------------------------------------------------------

def test_parse_bearer_challenge():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example.org/token",service="registry.example.org",'
        'scope="repository:dacbench/base:pull,push"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example.org/token",
                      "service": "registry.example.org",
                      "scope": "repository:dacbench/base:pull,push"}


def test_parse_basic_and_unquoted_challenges():
    assert parse_challenge('Basic realm="dacbench-test"') == ("basic", {"realm": "dacbench-test"})
    assert parse_challenge("Bearer realm=https://a.example.org/t, service=reg")[1] == {
        "realm": "https://a.example.org/t", "service": "reg"}
    assert parse_challenge("") == ("", {})


# --- credentials ---------------------------------------------------------------------------------

def _docker_config(home: Path, auths: dict) -> None:
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": auths}))


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_from_docker_config(tmp_path):
    _docker_config(tmp_path, {"https://registry.example.org/v1/": {"auth": _basic("al", "pw:x")},
                              "other.example.org": {"identitytoken": "refresh-me"}})
    found = find_credentials("registry.example.org", environ={}, home=tmp_path)
    assert (found.username, found.password) == ("al", "pw:x")
    assert "config.json" in found.origin
    token = find_credentials("other.example.org", environ={}, home=tmp_path)
    assert token.identity_token == "refresh-me" and token.username == ""
    assert find_credentials("third.example.org", environ={}, home=tmp_path) is None


def test_docker_config_dir_from_env(tmp_path):
    _docker_config(tmp_path / "elsewhere", {"registry.example.org": {"auth": _basic("d", "c")}})
    found = find_credentials("registry.example.org",
                             environ={"DOCKER_CONFIG": str(tmp_path / "elsewhere" / ".docker")},
                             home=tmp_path / "nohome")
    assert found.username == "d"


def test_credentials_from_apptainer_remote_yaml(tmp_path):
    (tmp_path / ".apptainer").mkdir()
    (tmp_path / ".apptainer" / "remote.yaml").write_text(f"""\
Active: SylabsCloud
Remotes:
  SylabsCloud:
    URI: cloud.example.org
    System: true
Credentials:
- URI: oras://registry.example.org
  Insecure: false
  Auth: Basic {_basic("ap", "tainer")}
- URI: docker://plain.example.org:5000
  Username: "pu"
  Password: 'pp'   # a comment
""")
    found = find_credentials("registry.example.org", environ={}, home=tmp_path)
    assert (found.username, found.password) == ("ap", "tainer")
    assert "remote.yaml" in found.origin
    plain = find_credentials("plain.example.org:5000", environ={}, home=tmp_path)
    assert (plain.username, plain.password) == ("pu", "pp")
    assert find_credentials("cloud.example.org", environ={}, home=tmp_path) is None


def test_credential_precedence(tmp_path):
    _docker_config(tmp_path, {"registry.example.org": {"auth": _basic("docker", "d")}})
    ours = {"DACBENCH_REMOTE_REGISTRY_USERNAME": "ours", "DACBENCH_REMOTE_REGISTRY_PASSWORD": "o"}
    apptainer = {"APPTAINER_DOCKER_USERNAME": "app", "APPTAINER_DOCKER_PASSWORD": "a"}
    host = "registry.example.org"
    assert find_credentials(host, environ={**ours, **apptainer}, home=tmp_path).username == "ours"
    assert find_credentials(host, environ=apptainer, home=tmp_path).username == "app"
    assert find_credentials(host, environ={}, home=tmp_path).username == "docker"


def test_broken_docker_config_is_named_without_its_content(tmp_path):
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text('{"auths": {"x": {"auth": "SECRET')
    with pytest.raises(BadConfig, match=r"config\.json: cannot read registry credentials") as info:
        find_credentials("registry.example.org", environ={}, home=tmp_path)
    assert "SECRET" not in str(info.value)


def test_secrets_never_show_in_repr_or_str():
    found = Credentials("user", "hunter2", "somewhere", identity_token="tok-123")
    for text in (repr(found), str(found)):
        assert "hunter2" not in text and "tok-123" not in text
    assert "somewhere" in str(found)


# --- manifests ------------------------------------------------------------------------------------

def _manifest(**changes) -> dict:
    manifest = json.loads(manifest_for(f"sha256:{SHA_A}", 1234, "base.sif"))
    manifest.update(changes)
    return manifest


def test_manifest_is_what_apptainer_push_writes():
    manifest = _manifest()
    assert manifest["mediaType"] == MANIFEST_TYPE and manifest["schemaVersion"] == 2
    assert manifest["config"] == {
        "mediaType": CONFIG_TYPE, "size": 2,
        # sha256 of the two bytes `{}`, the config Apptainer writes
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}
    layer = validate_manifest(REF, manifest)
    assert (layer.sha256, layer.size, layer.title) == (SHA_A, 1234, "base.sif")


@pytest.mark.parametrize("change", [
    # internal/pkg/client/oras/oras.go (1.5.3+): "We *don't* check the image config mediaType
    # as prior versions of Apptainer have not been consistent in setting this".
    {"config": {"mediaType": "application/vnd.unknown.config.v1+json"}},  # Apptainer 1.0-1.2
    {"config": {"mediaType": "application/vnd.oci.image.config.v1+json"}},
    {"mediaType": DOCKER_MANIFEST_TYPE},  # Apptainer 1.3.0 (fixed in 1.3.1)
    {"layers": [{"mediaType": LEGACY_LAYER_TYPE, "digest": f"sha256:{SHA_A}", "size": 1234}]},
])
def test_manifests_apptainer_pull_accepts_are_accepted(change):
    assert validate_manifest(REF, _manifest(**change)).sha256 == SHA_A


@pytest.mark.parametrize("change, problem", [
    ({"mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"},
     "neither an OCI nor a Docker v2 image manifest"),
    ({"layers": []}, "has 0"),
    ({"layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                  "digest": f"sha256:{SHA_A}", "size": 1}]}, "not a SIF's"),
    ({"layers": [{"mediaType": LAYER_TYPE, "digest": "md5:x", "size": 1}]}, "no valid sha256"),
])
def test_invalid_manifests_are_refused_with_the_reason(change, problem):
    with pytest.raises(RegistryError, match=problem) as info:
        validate_manifest(REF, _manifest(**change))
    assert str(REF) in str(info.value)


def test_an_index_is_resolved_to_this_machines_platform():
    index = {"manifests": [
        {"digest": f"sha256:{SHA_A}", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": f"sha256:{SHA_B}", "platform": {"os": "linux", "architecture": "arm64"}}]}
    assert platform_entry(REF, index, "arm64") == f"sha256:{SHA_B}"
    with pytest.raises(RegistryError, match=r"no linux/ppc64le image \(it offers: linux/amd64, "
                                            r"linux/arm64\)"):
        platform_entry(REF, index, "ppc64le")


def test_two_sif_layers_are_refused():
    manifest = _manifest()
    manifest["layers"] = manifest["layers"] * 2
    with pytest.raises(RegistryError, match="a SIF image has a single layer"):
        validate_manifest(REF, manifest)


def test_media_type_from_the_content_type_header():
    manifest = _manifest()
    del manifest["mediaType"]
    assert validate_manifest(REF, manifest, MANIFEST_TYPE + "; charset=utf-8").sha256 == SHA_A
    with pytest.raises(RegistryError, match="media type '\\(none\\)'"):
        validate_manifest(REF, manifest)


def test_pushed_files_are_read_in_bounded_chunks(tmp_path):
    file = tmp_path / "big.bin"
    file.write_bytes(b"x" * (3 * 1000 + 17))
    sizes = [len(chunk) for chunk in read_chunks(file, 1000)]
    assert sizes == [1000, 1000, 1000, 17]


# --- catalog edits --------------------------------------------------------------------------------

CATALOG = f"""\
# A comment that must survive.
family = "fam"
benchmarks = ["Luby"]   # trailing comment

[[versions]]
experiment = "exp:0.01"
image = "fam-0.01.sif"
sha256 = ""          # empty = not published
sources = []         # keep me
default = true

[[versions]]
experiment = "exp:0.02"
image = "fam-0.02.sif"
sha256 = "{SHA_A}"
sources = [
    "https://files.example.org/fam-0.02.sif"  # mirror
]
"""


@pytest.fixture
def catalog(tmp_path) -> Path:
    file = tmp_path / "benchmarks" / "fam.toml"
    file.parent.mkdir()
    file.write_text(CATALOG)
    return file


def _changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    return [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]


def test_add_source_pins_an_empty_sha256_and_keeps_comments(catalog):
    catalog_edit.add_source(catalog, "exp:0.01", "oras://registry.example.org/fam:0.01", SHA_B)
    after = catalog.read_text()
    assert _changed_lines(CATALOG, after) == [
        ('sha256 = ""          # empty = not published',
         f'sha256 = "{SHA_B}"          # empty = not published'),
        ("sources = []         # keep me",
         'sources = ["oras://registry.example.org/fam:0.01"]         # keep me')]
    version = parse_catalog_file(catalog).versions[0]
    assert version.sha256 == SHA_B
    assert version.sources == ("oras://registry.example.org/fam:0.01",)


def test_add_source_to_a_multiline_array(catalog):
    catalog_edit.add_source(catalog, "exp:0.02", "oras://registry.example.org/fam:0.02", SHA_A)
    version = parse_catalog_file(catalog).versions[1]
    assert version.sources == ("https://files.example.org/fam-0.02.sif",
                               "oras://registry.example.org/fam:0.02")
    assert "# mirror" in catalog.read_text() and "# A comment that must survive." in \
        catalog.read_text()


def test_add_source_twice_changes_nothing(catalog):
    source = "oras://registry.example.org/fam:0.02"
    catalog_edit.add_source(catalog, "exp:0.02", source, SHA_A)
    once = catalog.read_text()
    catalog_edit.add_source(catalog, "exp:0.02", source, SHA_A)
    assert catalog.read_text() == once


def test_add_source_refuses_another_sha256(catalog):
    with pytest.raises(BadConfig) as info:
        catalog_edit.add_source(catalog, "exp:0.02", "oras://registry.example.org/f:2", SHA_B)
    message = str(info.value)
    assert SHA_A in message and SHA_B in message and "new experiment id" in message
    assert catalog.read_text() == CATALOG


def test_check_publishable(catalog, tmp_path):
    with pytest.raises(BadConfig, match="pinned to sha256"):
        catalog_edit.check_publishable(catalog, "exp:0.02", SHA_B)
    assert catalog_edit.check_publishable(catalog, "exp:0.02", SHA_A).name == "fam"
    assert catalog_edit.check_publishable(catalog, "exp:0.01", SHA_B) is not None  # unpinned
    assert catalog_edit.check_publishable(tmp_path / "missing.toml", "exp:1", SHA_B) is None


def test_add_version_appends_a_table(catalog):
    catalog_edit.add_version(catalog, "exp:0.03", "fam-0.03.sif", SHA_B,
                             ["oras://registry.example.org/fam:0.03"], dacbench="0.5.6")
    after = catalog.read_text()
    assert after.startswith(CATALOG)  # nothing above was touched
    version = parse_catalog_file(catalog).versions[2]
    assert (version.experiment, version.image, version.sha256, version.dacbench) == (
        "exp:0.03", "fam-0.03.sif", SHA_B, "0.5.6")
    with pytest.raises(BadConfig, match="exists already"):
        catalog_edit.add_version(catalog, "exp:0.03", "fam-0.03.sif", SHA_B)


def test_new_catalog_text_parses(tmp_path):
    file = tmp_path / "benchmarks" / "new.toml"
    file.parent.mkdir()
    file.write_text(catalog_edit.new_catalog_text("base", ["Luby", "ToySGD"], "recipes/b.def"))
    catalog_edit.add_version(file, "exp:1", "base-1.sif", SHA_A, ["oras://127.0.0.1:5/b:1"])
    family = parse_catalog_file(file)
    assert (family.name, family.benchmarks) == ("base", ("Luby", "ToySGD"))
    assert family.recipe == (tmp_path / "recipes" / "b.def").resolve()
    assert family.versions[0].sources == ("oras://127.0.0.1:5/b:1",)
    with pytest.raises(BadConfig, match=r"org\.dacbench-remote\.benchmarks"):
        catalog_edit.new_catalog_text("base", [])


def test_add_source_without_a_sources_line(tmp_path):
    file = tmp_path / "benchmarks" / "f.toml"
    file.parent.mkdir()
    file.write_text(f'family = "f"\nbenchmarks = ["Luby"]\n\n[[versions]]\n'
                    f'experiment = "exp:1"\nimage = "f-1.sif"\nsha256 = "{SHA_A}"\n')
    catalog_edit.add_source(file, "exp:1", "oras://registry.example.org/f:1", SHA_A)
    assert parse_catalog_file(file).versions[0].sources == ("oras://registry.example.org/f:1",)


def test_write_pin_sets_sha256_and_inputs(catalog):
    catalog_edit.write_pin(catalog, "exp:0.01", SHA_B, SHA_A)
    version = parse_catalog_file(catalog).versions[0]
    assert (version.sha256, version.inputs) == (SHA_B, SHA_A)
    assert "# empty = not published" in catalog.read_text()
    with pytest.raises(BadConfig, match="no `\\[\\[versions\\]\\]` table"):
        catalog_edit.write_pin(catalog, "exp:9", SHA_B, SHA_A)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        catalog_edit.write_pin(catalog, "exp:0.01", "xyz", SHA_A)


def test_write_pin_pins_the_packaged_unpinned_agent_family(tmp_path):
    """What scripts/pin_catalog.py does last for agent-sb3 (unpinned: an empty sha256, no inputs
    line; or pinned before)."""
    file = tmp_path / "agent-sb3.toml"
    file.write_text((Path(__file__).parents[1] / "benchmarks" / "agent-sb3.toml").read_text())
    catalog_edit.write_pin(file, "exp:0.01", SHA_B, SHA_A)
    family = parse_catalog_file(file)
    assert (family.kind, family.versions[0].sha256, family.versions[0].inputs) == (
        "agent", SHA_B, SHA_A)
    assert 'kind = "agent"' in file.read_text()


# --- publish: errors found before any network request ---------------------------------------------

def test_publish_refuses_a_file_that_is_not_a_sif(tmp_path):
    file = tmp_path / "notes.sif"
    file.write_bytes(b"not a SIF at all" * 100)
    with pytest.raises(CorruptImage):
        publish(file, "oras://127.0.0.1:9/x:1", progress=False)


def test_publish_needs_experiment_and_catalog_together(tmp_path):
    with pytest.raises(RegistryError, match="--experiment and --catalog go together"):
        publish(tmp_path / "x.sif", "oras://127.0.0.1:9/x:1", experiment="exp:1", progress=False)


def test_publish_to_a_digest_is_refused(tmp_path):
    with pytest.raises(RegistryError, match="publish to a tag"):
        push_sif(tmp_path / "x.sif", f"oras://127.0.0.1:9/x@sha256:{SHA_A}", progress=False)


# --- routing in fetch_source ----------------------------------------------------------------------

def test_oras_is_pulled_without_apptainer_while_library_still_needs_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apptainer, no singularity
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SourceFailed) as oras:
        fetch_source("oras://127.0.0.1:9/dacbench/x:1", tmp_path / "a.part", progress=False)
    assert "cannot reach 127.0.0.1:9" in str(oras.value) and "Apptainer" not in str(oras.value)
    with pytest.raises(SourceFailed, match=r"Apptainer .* is not installed"):
        fetch_source("library://x/y/z:1", tmp_path / "b.part", progress=False)
