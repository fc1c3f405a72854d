"""Talking to an OCI registry over its HTTP API: references, authentication, SIF manifests, pulls.

What `apptainer push` writes: a manifest with one `...sif.layer.v1.sif` layer, the SIF. Pulls
accept what `apptainer pull oras://` accepts (internal/pkg/client/oras/oras.go): an OCI or
Docker v2 manifest (Apptainer 1.3.0 pushed the latter) whose single layer is the SIF, under
today's layer type or Singularity < 3.7's misspelt one, whatever the config's type (Apptainer
pushed several over the years); an image index is resolved to its linux/<this arch> entry.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from ..errors import RegistryAuthError, RegistryError
from .credentials import PASSWORD_ENV, USERNAME_ENV, Credentials, find_credentials
from .download import Fetched, download_http
from .sif import host_arch

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (MANIFEST_TYPE, DOCKER_MANIFEST_TYPE)
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
CONFIG_TYPE = "application/vnd.sylabs.sif.config.v1+json"  # what we push; pulls ignore it
LAYER_TYPE = "application/vnd.sylabs.sif.layer.v1.sif"
# The layer type of Singularity < 3.7's pushes, typo included (SifLayerMediaTypeProto).
LEGACY_LAYER_TYPE = "appliciation/vnd.sylabs.sif.layer.tar"
SIF_LAYER_TYPES = (LAYER_TYPE, LEGACY_LAYER_TYPE)
TITLE = "org.opencontainers.image.title"
INSECURE_ENV = "DACBENCH_REMOTE_INSECURE_REGISTRIES"
_ACCEPT = ", ".join([*MANIFEST_TYPES, *INDEX_TYPES])
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_LOGIN_HINT = (f"set ${USERNAME_ENV} and ${PASSWORD_ENV}, or log in with `docker login` or "
               "`apptainer registry login` (see docs/catalog.md)")


@dataclass(frozen=True)
class Reference:
    """`oras://REGISTRY/REPOSITORY:TAG` or `...@sha256:DIGEST`, split into its parts."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def reference(self) -> str:
        """What names the manifest in the API: the digest if given (it pins), else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        tail = f"@{self.digest}" if self.digest else f":{self.tag}"
        return f"oras://{self.registry}/{self.repository}{tail}"


def parse_reference(uri: str) -> Reference:
    """Split an oras:// URI; a missing tag means `latest`, as for Apptainer and Docker."""
    rest = uri.removeprefix("oras://")
    host, _, path = rest.partition("/")
    if not uri.startswith("oras://") or not host or not path:
        raise RegistryError(f"{uri!r} is not an OCI reference; write "
                            "oras://REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST)")
    repository, tag, digest = path, "latest", ""
    if "@" in path:
        repository, _, digest = path.partition("@")
        tag = ""
        if not _DIGEST.fullmatch(digest):
            raise RegistryError(f"{uri}: the digest must be sha256: and 64 lowercase hex digits")
    elif ":" in path.rsplit("/", 1)[-1]:
        repository, _, tag = path.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise RegistryError(f"{uri}: {tag!r} is not a valid tag (letters, digits, _ . -)")
    if not _REPOSITORY.fullmatch(repository):
        raise RegistryError(f"{uri}: {repository!r} is not a valid repository name (lowercase "
                            "letters, digits and . _ - separated by /)")
    return Reference(host.lower(), repository, tag, digest)


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1, with or without a port."""
    if host.startswith("["):  # [::1]:5000
        name = host[1:].split("]", 1)[0]
    else:  # name:port, or a bare IPv6 address (more than one colon)
        name = host.split(":")[0] if host.count(":") == 1 else host
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """(scheme, parameters) of a `WWW-Authenticate` header, e.g. Bearer realm="...",scope="..."."""
    scheme, _, rest = header.strip().partition(" ")
    params = {key.lower(): value for key, value in
              re.findall(r'([A-Za-z_]+)\s*=\s*"([^"]*)"', rest)}
    params.update({key.lower(): value for key, value in
                   re.findall(r'([A-Za-z_]+)\s*=\s*([^",\s]+)', rest) if key.lower() not in params})
    return scheme.lower(), params


@dataclass(frozen=True)
class Layer:
    """The SIF layer of a manifest: its digest (the SIF file's sha256), size and file name."""

    digest: str
    size: int
    title: str

    @property
    def sha256(self) -> str:
        """The hex digest, as the catalog writes it."""
        return self.digest.removeprefix("sha256:")


def validate_manifest(ref: Reference, manifest: Any, content_type: str = "") -> Layer:
    """The one SIF layer of a manifest; RegistryError naming what is wrong otherwise.

    As `apptainer pull`: the config's media type is not checked ("prior versions of Apptainer
    have not been consistent in setting this"); the single layer must have a SIF layer type.
    """
    if not isinstance(manifest, dict):
        raise RegistryError(f"{ref}: the manifest is not a JSON object")
    kind = manifest_kind(manifest, content_type)
    if kind not in MANIFEST_TYPES:
        raise RegistryError(
            f"{ref}: the manifest has media type {kind or '(none)'!r}, neither an OCI nor a "
            "Docker v2 image manifest: it is not a SIF pushed by `apptainer push` or "
            "`dacbench-remote publish`")
    layers = manifest.get("layers") or []
    if len(layers) != 1:
        raise RegistryError(f"{ref}: a SIF image has a single layer (the SIF file), this one has "
                            f"{len(layers)}; a Docker/OCI container image needs docker:// and "
                            "Apptainer, not oras://")
    layer = layers[0] if isinstance(layers[0], dict) else {}
    if layer.get("mediaType") not in SIF_LAYER_TYPES:
        raise RegistryError(f"{ref}: the layer has media type {layer.get('mediaType')!r}, not a "
                            f"SIF's ({' or '.join(SIF_LAYER_TYPES)}); republish the image")
    digest, size = layer.get("digest", ""), layer.get("size")
    if not _DIGEST.fullmatch(str(digest)) or not isinstance(size, int) or size < 0:
        raise RegistryError(f"{ref}: the SIF layer has no valid sha256 digest and size")
    return Layer(digest, size, str((layer.get("annotations") or {}).get(TITLE, "")))


def manifest_kind(manifest: dict, content_type: str = "") -> str:
    """The manifest's media type: its own field, else the Content-Type it was served with."""
    return str(manifest.get("mediaType") or content_type.split(";")[0].strip())


def platform_entry(ref: Reference, index: dict, arch: str) -> str:
    """The digest of an index's linux/`arch` manifest (as Apptainer's pull picks it)."""
    entries = [entry for entry in index.get("manifests") or [] if isinstance(entry, dict)]
    for entry in entries:
        platform = entry.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == arch \
                and _DIGEST.fullmatch(str(entry.get("digest", ""))):
            return str(entry["digest"])
    offered = ", ".join(f"{(e.get('platform') or {}).get('os')}/"
                        f"{(e.get('platform') or {}).get('architecture')}" for e in entries)
    raise RegistryError(f"{ref}: the image index has no linux/{arch} image (it offers: "
                        f"{offered or 'nothing'}); push one for this machine's architecture")


class RegistryClient:
    """One repository of one registry: requests with the auth the registry asks for.

    Plain HTTP is used for loopback registries and when `insecure`; any other plain-HTTP URL
    (a token realm, a redirect, an upload location) is refused, so secrets never travel in clear.
    """

    def __init__(self, ref: Reference, *, credentials: Credentials | None = None,
                 insecure: bool = False, timeout: tuple[float, float] = (15.0, 60.0)):

        self.ref = ref
        self.insecure = insecure or _configured_insecure(ref.registry)
        plain = self.insecure or is_loopback(ref.registry)
        self.root = f"{'http' if plain else 'https'}://{ref.registry}/v2/{ref.repository}/"
        self.timeout = timeout
        self._credentials = credentials
        self._looked_up = credentials is not None
        self._authorization = ""
        self.session = requests.Session()
        self.session.hooks["response"].append(self._vet_redirect)

    @property
    def credentials(self) -> Credentials | None:
        """Explicit credentials, else the first found for this host (looked up once)."""
        if not self._looked_up:
            self._credentials = find_credentials(self.ref.registry)
            self._looked_up = True
        return self._credentials

    def url(self, path: str) -> str:
        """An API URL under this repository (`blobs/...`, `manifests/...`), or a Location."""
        return urljoin(self.root, path)

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header earned so far (for the blob download)."""
        return {"Authorization": self._authorization} if self._authorization else {}

    def check_url(self, url: str) -> None:
        """Refuse plain HTTP to a host that is neither loopback nor allowed as insecure."""
        parts = urlsplit(url)
        if parts.scheme == "http" and not self.insecure and not is_loopback(parts.netloc):
            raise RegistryError(
                f"{self.ref}: refusing plain HTTP to {parts.netloc} (credentials and tokens "
                "would travel unencrypted); use an https registry, or if you trust the network "
                "pass --insecure (insecure=True) or list the host in ${INSECURE_ENV}")

    def _vet_redirect(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.is_redirect:
            self.check_url(urljoin(response.url, response.headers.get("Location", "")))

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send once; on 401 answer the challenge and send once more."""

        url = self.url(url)
        self.check_url(url)
        headers = dict(kwargs.pop("headers", None) or {})
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, url, headers={**headers,
                                            **self.auth_headers()}, **kwargs)
            if response.status_code == 401:
                self._authenticate(response.headers.get("WWW-Authenticate", ""))
                response = self.session.request(method, url, headers={**headers,
                                                **self.auth_headers()}, **kwargs)
                if response.status_code == 401:
                    raise self._rejected(response.status_code) if self.credentials else \
                        self._missing()
        except requests.exceptions.SSLError as exc:
            raise RegistryError(
                f"{self.ref}: TLS with {self.ref.registry} failed ({str(exc)[:160]}); if this "
                f"registry serves plain HTTP, pass --insecure or list it in ${INSECURE_ENV}"
            ) from None
        except requests.RequestException as exc:
            raise RegistryError(f"{self.ref}: cannot reach {self.ref.registry} "
                                f"({type(exc).__name__}); check the address and the network") \
                from None
        return response

    def _authenticate(self, challenge: str) -> None:
        scheme, params = parse_challenge(challenge)
        found = self.credentials
        if scheme == "basic":
            if found is None or found.identity_token:
                raise self._missing()
            pair = f"{found.username}:{found.password}".encode()
            self._authorization = "Basic " + base64.b64encode(pair).decode()
        elif scheme == "bearer" and params.get("realm"):
            self._authorization = "Bearer " + self._token(params, found)
        else:
            raise RegistryAuthError(f"{self.ref}: {self.ref.registry} asks for authentication "
                                    f"of an unsupported kind ({scheme or 'none'!r})")

    def _token(self, params: dict[str, str], found: Credentials | None) -> str:
        """A bearer token from the realm: anonymous, with basic credentials, or a refresh token."""
        realm = params["realm"]
        self.check_url(realm)
        scope = params.get("scope") or f"repository:{self.ref.repository}:pull"
        query = {"service": params.get("service", ""), "scope": scope}
        if found is not None and found.identity_token:
            response = self.session.post(realm, data={
                **query, "grant_type": "refresh_token", "refresh_token": found.identity_token,
                "client_id": "dacbench-remote"}, timeout=self.timeout)
        else:
            auth = (found.username, found.password) if found is not None else None
            response = self.session.get(realm, params=query, auth=auth, timeout=self.timeout)
        if response.status_code in (401, 403):
            raise self._rejected(response.status_code) if found else self._missing()
        if response.status_code != 200:
            raise RegistryAuthError(f"{self.ref}: the token service of {self.ref.registry} "
                                    f"answered HTTP {response.status_code}; try again later")
        try:
            body = response.json()
            return str(body.get("token") or body["access_token"])
        except (ValueError, KeyError, AttributeError):
            raise RegistryAuthError(f"{self.ref}: the token service of {self.ref.registry} "
                                    "sent no token") from None

    def _missing(self) -> RegistryAuthError:
        return RegistryAuthError(f"{self.ref}: {self.ref.registry} requires credentials for "
                                 f"this (HTTP 401) and none were found; {_LOGIN_HINT}")

    def _rejected(self, status: int) -> RegistryAuthError:
        found = self.credentials
        origin = found.origin if found else "anonymous access"
        return RegistryAuthError(
            f"{self.ref}: {self.ref.registry} rejected the credentials from {origin} "
            f"(HTTP {status}); check them (they are not shown here), or {_LOGIN_HINT}")

    def fail(self, response: requests.Response, what: str) -> RegistryError:
        """An error for an unexpected answer, naming the registry's own error code."""
        codes = _error_codes(response)
        if response.status_code == 404:
            return RegistryError(
                f"{self.ref}: {what}: not found on {self.ref.registry} (HTTP 404 {codes}); check "
                "the repository name and the tag or digest")
        if response.status_code == 403:
            return RegistryAuthError(
                f"{self.ref}: {what}: access denied (HTTP 403 {codes}); the account from "
                f"{self.credentials.origin if self.credentials else 'anonymous access'} lacks "
                "permission for this repository")
        return RegistryError(f"{self.ref}: {what}: HTTP {response.status_code} {codes}".rstrip())


def _error_codes(response: requests.Response) -> str:
    """The `errors[].code` of a registry's JSON error body (MANIFEST_UNKNOWN, ...), if any."""
    try:
        errors = response.json().get("errors") or []
        return ", ".join(str(e.get("code")) for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        return ""


def _configured_insecure(host: str) -> bool:
    """Hosts the user allows plain HTTP to, for pulls where no --insecure flag exists."""
    listed = os.environ.get(INSECURE_ENV, "").replace(",", " ").split()
    return host.lower() in (name.lower() for name in listed)


def fetch_manifest(client: RegistryClient) -> tuple[Layer, str]:
    """The validated SIF layer of the reference's manifest, and the manifest's digest; an index
    is resolved to its entry for linux and this machine's architecture."""
    ref = client.ref
    manifest, content_type, digest = _get_manifest(client, ref.reference, ref.digest)
    if manifest_kind(manifest, content_type) in INDEX_TYPES:
        entry = platform_entry(ref, manifest, host_arch())
        manifest, content_type, digest = _get_manifest(client, entry, entry)
    return validate_manifest(ref, manifest, content_type), digest


def _get_manifest(client: RegistryClient, reference: str, expected: str) -> tuple[Any, str, str]:
    """(JSON, Content-Type, digest) of one manifest; refused if it is not the `expected` digest."""
    ref = client.ref
    response = client.request("GET", f"manifests/{reference}", headers={"Accept": _ACCEPT})
    if response.status_code != 200:
        raise client.fail(response, "manifest")
    digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
    if expected and digest != expected:
        raise RegistryError(f"{ref}: the registry sent a manifest with digest {digest} for "
                            f"{expected}; refusing it (the registry or a proxy altered it)")
    try:
        manifest = json.loads(response.content)
    except ValueError:
        raise RegistryError(f"{ref}: the manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise RegistryError(f"{ref}: the manifest is not a JSON object")
    return manifest, response.headers.get("Content-Type", ""), digest


def pull_sif(uri: str, part: Path, *, credentials: Credentials | None = None,
             insecure: bool = False, connect_timeout: float = 15.0, read_timeout: float = 60.0,
             attempts: int = 3, label: str = "", progress: bool = True,
             expected_sha256: str = "") -> Fetched:
    """Download the SIF of an oras:// reference into `part` (resuming it) via download_http.

    The caller compares the returned sha256 with the catalog's, as for any source; with
    `expected_sha256`, a manifest naming another layer is refused before any byte is fetched.
    """
    client = RegistryClient(parse_reference(uri), credentials=credentials, insecure=insecure,
                            timeout=(connect_timeout, read_timeout))
    layer, _ = fetch_manifest(client)
    if expected_sha256 and layer.digest != f"sha256:{expected_sha256}":
        raise RegistryError(
            f"{uri} holds a SIF with {layer.digest}, not the pinned sha256:{expected_sha256} "
            "(the tag now names another image; nothing was downloaded). Pin the source by "
            "digest (oras://...@sha256:...) or correct the catalog entry")
    return download_http(client.url(f"blobs/{layer.digest}"), part,
                         connect_timeout=connect_timeout, read_timeout=read_timeout,
                         attempts=attempts, label=label or layer.title or part.name,
                         progress=progress, headers=client.auth_headers(),
                         session=client.session)
