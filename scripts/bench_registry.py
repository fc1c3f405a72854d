"""Measure registry transfers: push, and pull+verify from a local registry vs HTTPS and HTTP.

    python scripts/bench_registry.py [--mb 256] [--repeat 3]

Starts Debian's docker-registry on 127.0.0.1 (apt-get install docker-registry), and an
http.server with the same file over HTTPS (a self-signed certificate made with openssl, trusted
through REQUESTS_CA_BUNDLE) and over plain HTTP, and fetches each into fresh caches with
ImageCache.fetch (download, sha256, fsync, rename), so the ratios are the registry path's own
overhead against our ordinary download path. A report, never a test assertion.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dacbench_remote.images.cache import ImageCache  # noqa: E402
from dacbench_remote.images.catalog import ResolvedImage  # noqa: E402
from dacbench_remote.images.publish import push_sif  # noqa: E402
from tests.integration.registry_server import start_registry  # noqa: E402


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        return


def fetch_seconds(source: str, digest: str, root: Path) -> float:
    """Seconds for one verified fetch of `source` into an empty cache."""
    resolved = ResolvedImage("Luby", "bench", "exp:0", "big.sif", digest, (source,), None, "",
                             True, Path("bench.toml"))
    started = time.perf_counter()
    ImageCache(root).fetch(resolved, progress=False)
    return time.perf_counter() - started


def https_server(directory: Path, certs: Path) -> ThreadingHTTPServer:
    """An HTTPS file server on 127.0.0.1 with a fresh self-signed certificate, trusted by
    requests (and so by our downloader) through REQUESTS_CA_BUNDLE."""
    cert, key = certs / "cert.pem", certs / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    os.environ["REQUESTS_CA_BUNDLE"] = str(cert)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="file size in MiB (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (best is shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        served = tmp / "served"
        served.mkdir()
        big = served / "big.sif"
        with big.open("wb") as out:
            for _ in range(args.mb):
                out.write(os.urandom(1 << 20))
        digest = hashlib.sha256(big.read_bytes()).hexdigest()
        size_mb = big.stat().st_size / 1e6
        httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                    functools.partial(Quiet, directory=str(served)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        httpsd = https_server(served, tmp)
        registry = start_registry(tmp / "registry")
        try:
            pushes = []
            for i in range(args.repeat):
                started = time.perf_counter()
                pushed = push_sif(big, f"oras://{registry.host}/bench/big{i}:1", progress=False)
                pushes.append(time.perf_counter() - started)
                assert pushed.uploaded  # a new repository each time: the blob really goes up
            http_url = f"http://127.0.0.1:{httpd.server_address[1]}/big.sif"
            https_url = f"https://127.0.0.1:{httpsd.server_address[1]}/big.sif"
            oras = f"oras://{registry.host}/bench/big0:1"
            plain = [fetch_seconds(http_url, digest, tmp / f"h{i}") for i in range(args.repeat)]
            pulls = [fetch_seconds(oras, digest, tmp / f"r{i}") for i in range(args.repeat)]
            tls = [fetch_seconds(https_url, digest, tmp / f"s{i}") for i in range(args.repeat)]
        finally:
            registry.stop()
            httpd.shutdown()
            httpsd.shutdown()
    best_push, best_plain, best_pull, best_tls = min(pushes), min(plain), min(pulls), min(tls)
    print(f"file: {size_mb:.0f} MB, best of {args.repeat}, 127.0.0.1, this machine")
    print(f"push (hash + HEAD + chunked PATCH + PUT): {size_mb / best_push:7.1f} MB/s "
          f"({best_push:.2f} s)")
    print(f"pull+verify, plain HTTP download_http:    {size_mb / best_plain:7.1f} MB/s "
          f"({best_plain:.2f} s)")
    print(f"pull+verify, HTTPS download_http:         {size_mb / best_tls:7.1f} MB/s "
          f"({best_tls:.2f} s)")
    print(f"pull+verify, oras:// from the registry:   {size_mb / best_pull:7.1f} MB/s "
          f"({best_pull:.2f} s)")
    print(f"registry pull / HTTPS time ratio: {best_pull / best_tls:.2f}; "
          f"registry pull / plain HTTP time ratio: {best_pull / best_plain:.2f}")


if __name__ == "__main__":
    main()
