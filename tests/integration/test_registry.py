"""Publish and pull against real registries on 127.0.0.1: Debian's docker-registry, open, with
htpasswd, and with token auth from a real token server; faults come from a real proxy in front.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from dacbench_remote.cli import main
from dacbench_remote.errors import ChecksumMismatch, DownloadError, RegistryAuthError, RegistryError
from dacbench_remote.images.cache import ImageCache
from dacbench_remote.images.catalog import Catalog
from dacbench_remote.images.credentials import Credentials
from dacbench_remote.images.publish import publish, push_sif
from dacbench_remote.images.registry import CONFIG_TYPE, LAYER_TYPE, MANIFEST_TYPE, pull_sif
from dacbench_remote.images.resolve import resolve_image
from dacbench_remote.images.sif import host_arch, write_sif
from tests.conftest import SHARED_DIR, run_as
from tests.integration.registry_server import (
    TokenServer,
    env_without_credentials,
    htpasswd_auth,
    start_registry,
)
from tests.needs import need_tools

pytestmark = pytest.mark.integration

USER, PASSWORD = "publisher", "pw-9f3c-not-in-any-log"
CREDS = Credentials(USER, PASSWORD, "the test")
BENCHMARK = "RegistryTiny"


@pytest.fixture(scope="session")
def workdir():
    SHARED_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(SHARED_DIR, 0o755)
    root = Path(tempfile.mkdtemp(prefix="registry-", dir=SHARED_DIR))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def open_registry(workdir):
    need_tools("docker-registry")
    registry = start_registry(workdir / "open")
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def auth_registry(workdir):
    need_tools("docker-registry", "htpasswd")
    registry = start_registry(workdir / "htpasswd",
                              auth=htpasswd_auth(workdir / "htpasswd", USER, PASSWORD))
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def token_registry(workdir):
    need_tools("docker-registry", "openssl")
    tokens = TokenServer(workdir / "tokens", user=USER, password=PASSWORD).start()
    registry = start_registry(workdir / "token", auth=tokens.auth_section())
    yield registry, tokens
    registry.stop()
    tokens.stop()


def make_image(directory: Path, name: str = "tiny.sif", payload: str = "one") -> Path:
    """A real SIF of a few KB with the labels `publish` reads to start a new catalog file."""
    need_tools("mksquashfs")
    root = directory / f"{name}.rootfs"
    root.mkdir(parents=True)
    (root / "payload.txt").write_text(payload)
    squashfs = directory / f"{name}.squashfs"
    subprocess.run(["mksquashfs", str(root), str(squashfs), "-noappend", "-quiet",
                    "-no-progress"], check=True, stdout=subprocess.DEVNULL)
    image = directory / name
    write_sif(image, deffile=b"Bootstrap: scratch\n", squashfs_path=squashfs, labels={
        "org.dacbench-remote.family": "registry-tiny",
        "org.dacbench-remote.benchmarks": f"{BENCHMARK},OtherTiny",
        "org.dacbench-remote.dacbench-version": "0.5.6"})
    image.chmod(0o644)
    return image


@pytest.fixture
def image(tmp_path) -> Path:
    return make_image(tmp_path, payload=tmp_path.name)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No credentials from the developer's environment or home; an empty config and cache."""
    for name in list(os.environ):
        if name.startswith(("DACBENCH_REMOTE_", "APPTAINER_DOCKER_")) or name == "DOCKER_CONFIG":
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DACBENCH_REMOTE_CACHE", str(tmp_path / "cache"))
    return home


def catalog_for(directory: Path, image: Path, source: str, sha256: str | None = None) -> Catalog:
    benchmarks = directory / "benchmarks"
    benchmarks.mkdir(parents=True, exist_ok=True)
    (benchmarks / "tiny.toml").write_text(textwrap.dedent(f"""\
        family = "registry-tiny"
        benchmarks = ["{BENCHMARK}"]

        [[versions]]
        experiment = "exp:reg"
        image = "registry-tiny.sif"
        sha256 = "{sha256 or hashlib.sha256(image.read_bytes()).hexdigest()}"
        sources = ["{source}"]
        """))
    return Catalog.load([benchmarks], packaged=False)


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert hashlib.sha256(PASSWORD.encode()).hexdigest() not in text


# --- publish, then pull -------------------------------------------------------------------------

def test_publish_then_pull_as_another_user_into_an_empty_cache(
        auth_registry, image, workdir, unprivileged_user, user_python, clean_env):
    source = f"oras://{auth_registry.host}/dacbench/tiny:asuser"
    catalog = workdir / "asuser" / "benchmarks" / "tiny.toml"
    published = publish(image, source, experiment="exp:reg", catalog=catalog,
                        credentials=CREDS, progress=False)
    assert published.uploaded and published.sha256 == hashlib.sha256(image.read_bytes()).hexdigest()
    family = Catalog.load([catalog.parent], packaged=False).resolve(BENCHMARK, "exp:reg")
    assert (family.family, family.sha256, family.sources, family.image, family.dacbench) == (
        "registry-tiny", published.sha256, (source,), image.name, "0.5.6")

    home = workdir / "asuser" / "home"
    (home / ".docker").mkdir(parents=True)
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (home / ".docker" / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"auth": auth}}}))
    for path in [workdir / "asuser", *(workdir / "asuser").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    subprocess.run(["chown", "-R", unprivileged_user, str(home)], check=True)
    (home / ".docker" / "config.json").chmod(0o600)
    done = run_as(unprivileged_user, [
        "env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin",
        f"DACBENCH_REMOTE_CATALOG={catalog.parent}",
        f"DACBENCH_REMOTE_CACHE={home / 'cache'}",
        user_python, "-m", "dacbench_remote", "pull", f"{BENCHMARK}@exp:reg"], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cached = home / "cache" / image.name
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == published.sha256
    assert cached.stat().st_uid == pwd.getpwnam(unprivileged_user).pw_uid
    provenance = json.loads((home / "cache" / f"{image.name}.json").read_text())
    assert provenance["origin"] == source and provenance["sha256"] == published.sha256
    _no_secret(done.stdout, done.stderr, json.dumps(provenance), catalog.read_text())


def test_manifest_and_media_types_through_the_registry_api(open_registry, image, clean_env):
    pushed = push_sif(image, f"oras://{open_registry.host}/dacbench/api:v1", progress=False)
    response = requests.get(open_registry.url("dacbench/api/manifests/v1"),
                            headers={"Accept": MANIFEST_TYPE}, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == MANIFEST_TYPE
    assert response.headers["Docker-Content-Digest"] == pushed.manifest_digest
    manifest = response.json()
    assert manifest["mediaType"] == MANIFEST_TYPE
    assert manifest["config"]["mediaType"] == CONFIG_TYPE
    config = requests.get(open_registry.url(f"dacbench/api/blobs/{manifest['config']['digest']}"),
                          timeout=10)
    assert config.content == b"{}"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == LAYER_TYPE
    assert layer["digest"] == "sha256:" + hashlib.sha256(image.read_bytes()).hexdigest()
    assert layer["size"] == image.stat().st_size
    assert layer["annotations"] == {"org.opencontainers.image.title": image.name}
    blob = requests.get(open_registry.url(f"dacbench/api/blobs/{layer['digest']}"), timeout=10)
    assert blob.content == image.read_bytes()
    # Pinned by the manifest digest, too.
    part = image.parent / "by-digest.part"
    fetched = pull_sif(f"oras://{open_registry.host}/dacbench/api@{pushed.manifest_digest}", part,
                       progress=False)
    assert fetched.sha256 == pushed.sha256 and part.read_bytes() == image.read_bytes()


def test_republishing_skips_the_blob_and_the_catalog_refuses_another_digest(
        open_registry, image, tmp_path, clean_env, capsys):
    source = f"oras://{open_registry.host}/dacbench/repub:1"
    catalog = tmp_path / "cat" / "benchmarks" / "tiny.toml"
    args = ["publish", str(image), source, "--experiment", "exp:1", "--catalog", str(catalog)]
    assert main(args) == 0
    assert main(args) == 0
    assert "already in the registry" in capsys.readouterr().out
    pinned = catalog.read_text()
    assert pinned.count(source) == 1
    other = make_image(tmp_path / "other", payload="different bytes")
    before = requests.get(open_registry.url("dacbench/repub/manifests/1"),
                          headers={"Accept": MANIFEST_TYPE}, timeout=10).content
    assert main(["publish", str(other), source, "--experiment", "exp:1",
                 "--catalog", str(catalog)]) == 1
    error = capsys.readouterr().err
    old, new = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (image, other))
    assert old in error and new in error and "new experiment id" in error
    assert catalog.read_text() == pinned
    after = requests.get(open_registry.url("dacbench/repub/manifests/1"),
                         headers={"Accept": MANIFEST_TYPE}, timeout=10).content
    assert after == before  # refused before anything was pushed


def test_catalog_pinned_to_the_registry_resolves_through_the_cache(
        open_registry, image, tmp_path, clean_env, monkeypatch):
    source = f"oras://{open_registry.host}/dacbench/resolve:1"
    push_sif(image, source, progress=False)
    catalog_for(tmp_path / "cat", image, source)
    monkeypatch.setenv("DACBENCH_REMOTE_CATALOG", str(tmp_path / "cat" / "benchmarks"))
    path, record = resolve_image(BENCHMARK, "exp:reg", progress=False)
    assert path.read_bytes() == image.read_bytes()
    assert record["origin"] == source and record["experiment"] == "exp:reg"
    assert record["sha256"] == record["catalog_sha256"] == hashlib.sha256(
        image.read_bytes()).hexdigest()


def test_a_tag_moved_to_another_image_is_refused_before_downloading(
        open_registry, image, tmp_path, clean_env, monkeypatch):
    source = f"oras://{open_registry.host}/dacbench/moved:1"
    push_sif(image, source, progress=False)
    pinned = "ab" * 32  # the catalog pins another image than the tag now names
    catalog_for(tmp_path / "cat", image, source, sha256=pinned)
    monkeypatch.setenv("DACBENCH_REMOTE_CATALOG", str(tmp_path / "cat" / "benchmarks"))
    with pytest.raises(DownloadError) as raised:
        resolve_image(BENCHMARK, "exp:reg", progress=False)
    actual = hashlib.sha256(image.read_bytes()).hexdigest()
    assert f"holds a SIF with sha256:{actual}, not the pinned sha256:{pinned}" in str(raised.value)
    assert "nothing was downloaded" in str(raised.value)
    assert not list((tmp_path / "cache").glob("*.part"))


# --- authentication ------------------------------------------------------------------------------

def test_htpasswd_registry_without_and_with_wrong_credentials(
        auth_registry, image, tmp_path, clean_env, monkeypatch, caplog):
    source = f"oras://{auth_registry.host}/dacbench/private:1"
    with pytest.raises(RegistryAuthError, match=r"requires credentials.*none were found") as none:
        push_sif(image, source, progress=False)
    assert "DACBENCH_REMOTE_REGISTRY_USERNAME" in str(none.value)
    push_sif(image, source, credentials=CREDS, progress=False)

    cache = ImageCache(tmp_path / "cache")
    resolved = catalog_for(tmp_path / "cat", image, source).resolve(BENCHMARK, "exp:reg")
    with caplog.at_level(logging.DEBUG), pytest.raises(DownloadError) as anonymous:
        cache.fetch(resolved, progress=False)
    assert "requires credentials" in str(anonymous.value) and source in str(anonymous.value)
    monkeypatch.setenv("DACBENCH_REMOTE_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("DACBENCH_REMOTE_REGISTRY_PASSWORD", PASSWORD + "-wrong")
    with caplog.at_level(logging.DEBUG), pytest.raises(DownloadError) as wrong:
        cache.fetch(resolved, progress=False)
    message = str(wrong.value)
    assert "rejected the credentials from $DACBENCH_REMOTE_REGISTRY_USERNAME" in message
    assert "HTTP 401" in message and "check them" in message
    monkeypatch.setenv("DACBENCH_REMOTE_REGISTRY_PASSWORD", PASSWORD)
    with caplog.at_level(logging.DEBUG):
        path = cache.fetch(resolved, progress=False)
    assert path.read_bytes() == image.read_bytes()
    _no_secret(str(anonymous.value), message, caplog.text,
               (path.parent / f"{path.name}.json").read_text())
    assert (PASSWORD + "-wrong") not in message + caplog.text


def test_anonymous_bearer_token_flow(token_registry, image, tmp_path, clean_env, caplog):
    registry, tokens = token_registry
    source = f"oras://{registry.host}/dacbench/public:1"
    with pytest.raises(RegistryAuthError, match="requires credentials"):
        push_sif(image, source, progress=False)  # anonymous tokens may pull, not push
    with pytest.raises(RegistryAuthError, match="rejected the credentials from the test"):
        push_sif(image, source, credentials=Credentials(USER, "wrong", "the test"),
                 progress=False)
    push_sif(image, source, credentials=CREDS, progress=False)
    # distribution lists the actions in any order (pull,push or push,pull)
    assert any(r["basic"] and "push" in r["query"]["scope"][0].rsplit(":", 1)[1].split(",")
               for r in tokens.requests_seen)
    seen = len(tokens.requests_seen)
    # The registry really checks tokens: without one it answers 401 with the challenge.
    bare = requests.get(registry.url("dacbench/public/manifests/1"), timeout=10)
    assert bare.status_code == 401 and bare.headers["WWW-Authenticate"].startswith("Bearer ")
    with caplog.at_level(logging.DEBUG):
        path = ImageCache(tmp_path / "cache").fetch(
            catalog_for(tmp_path / "cat", image, source).resolve(BENCHMARK, "exp:reg"),
            progress=False)
    assert path.read_bytes() == image.read_bytes()
    anonymous = tokens.requests_seen[seen:]
    assert anonymous and not any(r["basic"] for r in anonymous)
    assert anonymous[0]["query"] == {"service": ["dacbench-test-registry"],
                                     "scope": ["repository:dacbench/public:pull"]}
    _no_secret(caplog.text)


class _Challenger(BaseHTTPRequestHandler):
    """Answers every request with a bearer challenge whose realm is plain HTTP elsewhere."""

    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Bearer realm="http://192.0.2.1/token",service="x"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        """Quiet."""


def test_plain_http_to_a_non_loopback_host_is_refused(tmp_path, clean_env):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Challenger)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"oras://127.0.0.1:{server.server_address[1]}/dacbench/x:1"
        with pytest.raises(RegistryError, match=r"refusing plain HTTP to 192\.0\.2\.1") as info:
            pull_sif(uri, tmp_path / "x.part", progress=False)
        assert "--insecure" in str(info.value)
    finally:
        server.shutdown()


# --- wrong content ---------------------------------------------------------------------------------

def test_unknown_repository_and_tag_are_404(open_registry, image, tmp_path, clean_env):
    push_sif(image, f"oras://{open_registry.host}/dacbench/known:1", progress=False)
    # distribution answers MANIFEST_UNKNOWN for both; other registries say NAME_UNKNOWN.
    for uri in (f"oras://{open_registry.host}/dacbench/unknown:1",
                f"oras://{open_registry.host}/dacbench/known:nope"):
        with pytest.raises(RegistryError) as info:
            pull_sif(uri, tmp_path / "x.part", progress=False)
        message = str(info.value)
        assert uri in message and "HTTP 404" in message and "_UNKNOWN" in message
        assert "check the repository name and the tag" in message
        assert not (tmp_path / "x.part").exists()


# --- what each version of Apptainer/Singularity pushed, pulled back -------------------------------
# Shapes read from apptainer/apptainer's history (go JSON field order: mediaType, digest, size,
# annotations): Singularity 3.5-3.6 (deislabs/oras 0.8: config from /dev/null with the sif config
# type, the misspelt layer type, manifest without a mediaType field), Apptainer 1.0-1.2 (oras-go
# 1.x GenerateManifestAndConfig: `{}` config of type application/vnd.unknown.config.v1+json),
# Apptainer 1.3.0 (go-containerregistry, a Docker v2 manifest type by mistake), 1.3.1-1.5.x (an
# OCI manifest), and main after 1.5 (config data inline and a created annotation).
SIF_CONFIG = "application/vnd.sylabs.sif.config.v1+json"
PUSH_SHAPES = {
    "singularity-3.6": dict(config=b"", config_type=SIF_CONFIG,
                            layer_type="appliciation/vnd.sylabs.sif.layer.tar"),
    "apptainer-1.2": dict(config=b"{}", config_type="application/vnd.unknown.config.v1+json"),
    "apptainer-1.3.0": dict(config=b"{}", config_type=SIF_CONFIG,
                            manifest_type="application/vnd.docker.distribution.manifest.v2+json"),
    "apptainer-1.3.1": dict(config=b"{}", config_type=SIF_CONFIG, manifest_type=MANIFEST_TYPE),
    "apptainer-main": dict(config=b"{}", config_type=SIF_CONFIG, manifest_type=MANIFEST_TYPE,
                           config_data=True, created="2026-06-01T10:00:00Z"),
}


def push_shaped(registry, repository: str, tag: str, image: Path, *, config: bytes,
                config_type: str, layer_type: str = LAYER_TYPE, manifest_type: str = "",
                config_data: bool = False, created: str = "") -> str:
    """Upload `image` and a manifest as that version pushed them; returns the layer digest."""
    base = registry.url(repository)
    digests = []
    for blob in (config, image.read_bytes()):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        start = requests.post(f"{base}/blobs/uploads/", timeout=10)
        requests.put(start.headers["Location"], params={"digest": digest}, data=blob,
                     timeout=30).raise_for_status()
        digests.append(digest)
    config_descriptor = {"mediaType": config_type, "digest": digests[0], "size": len(config)}
    if config_data:
        config_descriptor["data"] = base64.b64encode(config).decode()
    manifest = {"schemaVersion": 2, **({"mediaType": manifest_type} if manifest_type else {}),
                "config": config_descriptor,
                "layers": [{"mediaType": layer_type, "digest": digests[1],
                            "size": image.stat().st_size,
                            "annotations": {"org.opencontainers.image.title": image.name}}]}
    if created:
        manifest["annotations"] = {"org.opencontainers.image.created": created}
    requests.put(f"{base}/manifests/{tag}", data=json.dumps(manifest, separators=(",", ":")),
                 headers={"Content-Type": manifest_type or MANIFEST_TYPE},
                 timeout=10).raise_for_status()
    return digests[1]


@pytest.mark.parametrize("shape", list(PUSH_SHAPES))
def test_pushes_of_every_apptainer_version_are_pulled(open_registry, image, tmp_path, clean_env,
                                                      shape):
    layer = push_shaped(open_registry, f"dacbench/shape-{shape}", "1", image,
                        **PUSH_SHAPES[shape])
    served = requests.get(open_registry.url(f"dacbench/shape-{shape}/manifests/1"),
                          headers={"Accept": ", ".join([MANIFEST_TYPE, PUSH_SHAPES[
                              "apptainer-1.3.0"]["manifest_type"]])}, timeout=10)
    assert served.headers["Content-Type"] == (PUSH_SHAPES[shape].get("manifest_type")
                                              or MANIFEST_TYPE)
    part = tmp_path / f"{shape}.part"
    fetched = pull_sif(f"oras://{open_registry.host}/dacbench/shape-{shape}:1", part,
                       progress=False, expected_sha256=layer.removeprefix("sha256:"))
    # Verification stays the layer's sha256: the SIF's own, whatever the manifest looked like.
    assert fetched.sha256 == hashlib.sha256(image.read_bytes()).hexdigest() == \
        layer.removeprefix("sha256:")
    assert part.read_bytes() == image.read_bytes()


def test_an_index_resolves_to_this_machines_image(open_registry, image, tmp_path, clean_env):
    layer = push_shaped(open_registry, "dacbench/indexed", "amd", image, **PUSH_SHAPES[
        "apptainer-1.3.1"])
    base = open_registry.url("dacbench/indexed")
    child = requests.get(f"{base}/manifests/amd", headers={"Accept": MANIFEST_TYPE}, timeout=10)
    index_type = "application/vnd.oci.image.index.v1+json"
    index = {"schemaVersion": 2, "mediaType": index_type, "manifests": [
        {"mediaType": MANIFEST_TYPE, "digest": child.headers["Docker-Content-Digest"],
         "size": len(child.content), "platform": {"os": "linux", "architecture": host_arch()}}]}
    requests.put(f"{base}/manifests/multi", data=json.dumps(index),
                 headers={"Content-Type": index_type}, timeout=10).raise_for_status()
    fetched = pull_sif(f"oras://{open_registry.host}/dacbench/indexed:multi",
                       tmp_path / "i.part", progress=False)
    assert "sha256:" + fetched.sha256 == layer


def test_a_container_image_manifest_is_refused(open_registry, tmp_path, clean_env):
    config = b'{"architecture":"amd64","os":"linux"}'
    base = open_registry.url("dacbench/docker")
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    start = requests.post(f"{base}/blobs/uploads/", timeout=10)
    requests.put(start.headers["Location"], params={"digest": digest}, data=config,
                 timeout=10).raise_for_status()
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": digest, "size": len(config)}, "layers": []}
    requests.put(f"{base}/manifests/1", json=manifest, headers={"Content-Type": MANIFEST_TYPE},
                 timeout=10).raise_for_status()
    with pytest.raises(RegistryError, match=r"a SIF image has a single layer .* this one has 0; a "
                                            r"Docker/OCI container image needs docker://"):
        pull_sif(f"oras://{open_registry.host}/dacbench/docker:1", tmp_path / "x.part",
                 progress=False)


def test_a_corrupted_blob_is_refused(open_registry, image, tmp_path, clean_env):
    source = f"oras://{open_registry.host}/dacbench/corrupt:1"
    pushed = push_sif(image, source, progress=False)
    blob = open_registry.blob_file("sha256:" + pushed.sha256)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    cache = ImageCache(tmp_path / "cache")
    resolved = catalog_for(tmp_path / "cat", image, source).resolve(BENCHMARK, "exp:reg")
    try:
        with pytest.raises(ChecksumMismatch) as info:
            cache.fetch(resolved, progress=False)
    finally:
        blob.write_bytes(image.read_bytes())
    assert info.value.expected == pushed.sha256
    assert info.value.actual == hashlib.sha256(data).hexdigest()
    assert source in str(info.value)
    kept = {p.name for p in (tmp_path / "cache").glob("*.sif*")} - {"registry-tiny.sif.lock"}
    assert kept == set()  # neither the image nor a .part is kept


# --- an interrupted pull resumes -------------------------------------------------------------------

class CuttingProxy:
    """Forwards requests to the registry; cuts the first blob response after `cut` bytes."""

    def __init__(self, upstream: str, cut: int):
        self.upstream, self.cut, self.log = upstream, cut, []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.forward(self)

            def log_message(self, *args) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        connection = http.client.HTTPConnection(self.upstream, timeout=10)
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
        connection.request("GET", handler.path, headers=headers)
        upstream = connection.getresponse()
        body = upstream.read()
        blob = "/blobs/" in handler.path
        self.log.append((handler.path, handler.headers.get("Range"), upstream.status))
        handler.send_response(upstream.status)
        for key, value in upstream.getheaders():
            if key.lower() not in ("connection", "transfer-encoding"):
                handler.send_header(key, value)
        handler.end_headers()
        cutting = blob and sum(1 for p, _, _ in self.log if "/blobs/" in p) == 1
        handler.wfile.write(body[: self.cut] if cutting else body)
        handler.wfile.flush()
        if cutting:
            handler.close_connection = True
            handler.connection.shutdown(2)


def test_an_interrupted_pull_resumes(open_registry, tmp_path, clean_env):
    big = tmp_path / "big.sif"
    with big.open("wb") as out:  # not a SIF: the registry and the pull do not care
        for _ in range(6):
            out.write(os.urandom(1 << 20))
    push_sif(big, f"oras://{open_registry.host}/dacbench/resume:1", progress=False)
    proxy = CuttingProxy(open_registry.host, cut=2_500_000)
    try:
        source = f"oras://{proxy.host}/dacbench/resume:1"
        resolved = catalog_for(tmp_path / "cat", big, source).resolve(BENCHMARK, "exp:reg")
        with pytest.raises(DownloadError, match="to resume"):
            ImageCache(tmp_path / "cache", attempts=1).fetch(resolved, progress=False)
        part = tmp_path / "cache" / "registry-tiny.sif.part"
        kept = part.stat().st_size  # whole network reads only: a cut one is lost
        assert 0 < kept <= 2_500_000
        path = ImageCache(tmp_path / "cache").fetch(resolved, progress=False)
    finally:
        proxy.server.shutdown()
    assert path.read_bytes() == big.read_bytes()
    ranges = [r for p, r, _ in proxy.log if "/blobs/" in p]
    assert ranges == [None, f"bytes={kept}-"]
    assert json.loads((path.parent / f"{path.name}.json").read_text())["origin"] == source


class RedirectingProxy(CuttingProxy):
    """Forwards manifest requests; answers blob requests with a redirect to `target + path`."""

    def __init__(self, upstream: str, target: str):
        super().__init__(upstream, cut=0)
        self.target = target

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        if "/blobs/" not in handler.path:
            self.log.append((handler.path, None, 0))
            return super().forward(handler)
        handler.send_response(307)
        handler.send_header("Location", self.target + handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()


def test_blob_redirects_are_followed_but_not_to_plain_http_elsewhere(
        open_registry, image, tmp_path, clean_env):
    push_sif(image, f"oras://{open_registry.host}/dacbench/redirect:1", progress=False)
    # As registries send blobs to storage: here the storage is the registry itself.
    to_storage = RedirectingProxy(open_registry.host, f"http://{open_registry.host}")
    away = RedirectingProxy(open_registry.host, "http://192.0.2.1")
    try:
        fetched = pull_sif(f"oras://{to_storage.host}/dacbench/redirect:1",
                           tmp_path / "ok.part", progress=False)
        assert fetched.sha256 == hashlib.sha256(image.read_bytes()).hexdigest()
        with pytest.raises(DownloadError) as info:
            ImageCache(tmp_path / "cache").fetch(catalog_for(
                tmp_path / "cat", image, f"oras://{away.host}/dacbench/redirect:1").resolve(
                    BENCHMARK, "exp:reg"), progress=False)
    finally:
        to_storage.server.shutdown()
        away.server.shutdown()
    assert "refusing plain HTTP to 192.0.2.1" in str(info.value)
    assert "--insecure" in str(info.value)


# --- memory ---------------------------------------------------------------------------------------

def test_pushing_a_large_file_does_not_read_it_into_memory(open_registry, tmp_path, clean_env):
    big = tmp_path / "large.sif"
    with big.open("wb") as out:
        for _ in range(256):
            out.write(os.urandom(1 << 20))
    script = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        from dacbench_remote.images.publish import push_sif
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        pushed = push_sif(Path({str(big)!r}), "oras://{open_registry.host}/dacbench/large:1",
                          progress=False)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(pushed.size, (after - before) // 1024)
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env=env_without_credentials(HOME=str(clean_env)))
    assert done.returncode == 0, done.stderr[-2000:]
    size, growth_mb = (int(x) for x in done.stdout.split())
    assert size == 256 << 20
    assert growth_mb < 64, f"peak RSS grew by {growth_mb} MB while pushing 256 MB"
    digest = requests.head(open_registry.url(f"dacbench/large/blobs/sha256:"
                                             f"{hashlib.sha256(big.read_bytes()).hexdigest()}"),
                           timeout=10)
    assert digest.status_code == 200 and int(digest.headers["Content-Length"]) == size
