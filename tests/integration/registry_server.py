"""A real OCI registry (Debian's docker-registry) on 127.0.0.1, and a real token server for it.

The token server signs RS256 JWTs with a key whose self-signed certificate is the registry's
rootcertbundle (JWT header `x5c`), as token auth in distribution expects.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

SERVICE = "dacbench-test-registry"
ISSUER = "dacbench-test-issuer"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Registry:
    """A running docker-registry: its host:port, storage root and process."""

    host: str
    storage: Path
    process: subprocess.Popen
    log: Path

    def url(self, path: str) -> str:
        return f"http://{self.host}/v2/{path.lstrip('/')}"

    def blob_file(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (to corrupt them in a test)."""
        hexdigest = digest.removeprefix("sha256:")
        return (self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest
                / "data")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_registry(directory: Path, *, auth: str = "") -> Registry:
    """Start docker-registry serving `directory/storage`; `auth` is the YAML of its auth section."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = directory / "storage"
    config = directory / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        + auth
    )
    log = directory / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out,
                                   stderr=subprocess.STDOUT)
    registry = Registry(f"127.0.0.1:{port}", storage, process, log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            requests.get(registry.url(""), timeout=1)
            return registry
        except requests.ConnectionError:
            time.sleep(0.05)
    registry.stop()
    raise RuntimeError(f"docker-registry did not answer: {log.read_text()[-2000:]}")


def htpasswd_auth(directory: Path, user: str, password: str) -> str:
    """The auth section for htpasswd (bcrypt) with one user."""
    line = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                          capture_output=True, text=True).stdout.strip()
    file = directory / "htpasswd"
    directory.mkdir(parents=True, exist_ok=True)
    file.write_text(line + "\n")
    return f"auth:\n  htpasswd:\n    realm: dacbench-test\n    path: {file}\n"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Issues registry tokens: pull to anyone, push only with the basic credentials given."""

    directory: Path
    user: str = ""
    password: str = ""
    port: int = 0
    requests_seen: list[dict] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = self.directory / "token.key"
        self.cert = self.directory / "token.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=dacbench-test-token", "-keyout", str(self.key),
                        "-out", str(self.cert)], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def auth_section(self) -> str:
        return (f"auth:\n  token:\n    realm: {self.realm}\n    service: {SERVICE}\n"
                f"    issuer: {ISSUER}\n    rootcertbundle: {self.cert}\n")

    def sign(self, claims: dict) -> str:
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}." \
                        f"{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True,
                                   capture_output=True).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def token_for(self, scope: str, authenticated: bool) -> str:
        access = []
        for item in scope.split():
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            allowed = [a for a in actions.split(",") if a == "pull" or authenticated]
            access.append({"type": kind, "name": name, "actions": allowed})
        now = int(time.time())
        return self.sign({"iss": ISSUER, "sub": self.user if authenticated else "",
                          "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                          "jti": uuid.uuid4().hex, "access": access})

    def start(self) -> TokenServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                given = self.headers.get("Authorization", "")
                expected = "Basic " + base64.b64encode(
                    f"{outer.user}:{outer.password}".encode()).decode()
                outer.requests_seen.append({"query": query, "basic": bool(given)})
                if given and given != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                scope = " ".join(query.get("scope", []))
                body = json.dumps({"token": outer.token_for(scope, bool(given))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


def env_without_credentials(**extra: str) -> dict[str, str]:
    """os.environ minus every registry credential variable, plus `extra`."""
    names = ("DACBENCH_REMOTE_REGISTRY_USERNAME", "DACBENCH_REMOTE_REGISTRY_PASSWORD",
             "APPTAINER_DOCKER_USERNAME", "APPTAINER_DOCKER_PASSWORD", "DOCKER_CONFIG")
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(extra)
    return env
