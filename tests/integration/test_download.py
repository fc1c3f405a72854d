"""Downloads against a real HTTP server on 127.0.0.1 with injected faults, and 16 real processes.

Decision tested here: after an interruption or a stall the `.part` file is KEPT (next to, never
instead of, the image) so the next attempt resumes it with Range; a checksum mismatch removes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import selectors
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dacbench_remote.errors import ChecksumMismatch, DownloadError
from dacbench_remote.images.cache import ImageCache
from dacbench_remote.images.catalog import Catalog, ResolvedImage
from tests.needs import need_apptainer, need_tools

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SIZE = 3 * 1024 * 1024 + 12345  # a few MB, not a multiple of any chunk size
PAYLOAD = os.urandom(SIZE)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Fault:
    """What to do to the next `times` requests of a path (times=None: every request)."""

    status: int | None = None  # answer with this HTTP error
    cut_after: int | None = None  # close the connection after this many body bytes
    stall_after: int | None = None  # stop sending after this many body bytes, keep it open
    corrupt: bool = False  # flip the bytes of the body
    ignore_range: bool = False  # answer a Range request with the whole file (200)
    gate: threading.Event | None = None  # send the body only once this is set
    times: int | None = 1


@dataclass
class Request:
    path: str
    range: str | None
    status: int
    sent: int = 0


@dataclass
class ImageServer:
    """A threading HTTP server with Range support whose faults the test injects per path."""

    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.log if r.path == "/" + path.lstrip("/")]

    def next_fault(self, path: str) -> Fault:
        queue = self.faults.get(path, [])
        if not queue:
            return Fault()
        fault = queue[0]
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                queue.pop(0)
        return fault


def make_handler(state: ImageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            return

        def do_GET(self) -> None:
            wanted = self.headers.get("Range")
            entry = Request(self.path, wanted, 0)
            state.log.append(entry)
            data = state.files.get(self.path)
            fault = state.next_fault(self.path)
            if data is None or fault.status:
                entry.status = fault.status or 404
                self.send_error(entry.status)
                return
            start = 0
            if wanted and not fault.ignore_range:
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    entry.status = 416
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            body = data[start:]
            if fault.corrupt:
                body = bytes(b ^ 0x5A for b in body)
            entry.status = 206 if start else 200
            self.send_response(entry.status)
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if fault.gate is not None:
                fault.gate.wait(60)
            limit = len(body)
            for cut in (fault.cut_after, fault.stall_after):
                if cut is not None:
                    limit = min(limit, cut)
            try:
                for offset in range(0, limit, 65536):
                    chunk = body[offset:min(offset + 65536, limit)]
                    self.wfile.write(chunk)
                    entry.sent += len(chunk)
                self.wfile.flush()
                if fault.stall_after is not None:
                    state.release.wait(30)
            except OSError:  # the client gave up (timeout) and closed: expected in stall tests
                return
            self.close_connection = True

    return Handler


@pytest.fixture
def server():
    state = ImageServer(files={"/img.sif": PAYLOAD})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        for queue in state.faults.values():
            for fault in queue:
                if fault.gate is not None:
                    fault.gate.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    # A proxy from the environment must not intercept requests to 127.0.0.1.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def resolved_image(*sources: str, sha256: str = DIGEST, image: str = "img.sif") -> ResolvedImage:
    return ResolvedImage(
        benchmark="Luby", family="toy", experiment="exp:0.01", image=image, sha256=sha256,
        sources=tuple(sources), recipe=None, dacbench="0.5.6", default=True,
        catalog_file=Path("/nonexistent/benchmarks/toy.toml"),
    )


def leftovers(cache: ImageCache) -> list[str]:
    return sorted(p.name for p in cache.root.iterdir() if not p.name.endswith(".lock"))


def write_catalog(directory: Path, *sources: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    listed = ", ".join(f'"{s}"' for s in sources)
    (directory / "toy.toml").write_text(textwrap.dedent(f"""
        family = "toy"
        benchmarks = ["Luby"]
        [[versions]]
        experiment = "exp:0.01"
        image = "img.sif"
        sha256 = "{DIGEST}"
        sources = [{listed}]
        default = true
    """))
    return directory


def test_plain_download_is_verified_and_recorded(tmp_path, server):
    cache = ImageCache(tmp_path)
    path = cache.fetch(resolved_image(server.url("img.sif")), progress=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DIGEST
    assert cache.provenance(path)["origin"] == server.url("img.sif")
    assert [(r.range, r.status, r.sent) for r in server.log] == [(None, 200, SIZE)]
    assert leftovers(cache) == ["img.sif", "img.sif.json", "img.sif.sha256"]


def test_connection_cut_halfway_is_resumed_with_range(tmp_path, server):
    server.faults["/img.sif"] = [Fault(cut_after=SIZE // 2)]
    cache = ImageCache(tmp_path)
    path = cache.fetch(resolved_image(server.url("img.sif")), progress=False)
    first, second = server.log
    assert (first.range, first.status, first.sent) == (None, 200, SIZE // 2)
    assert second.range is not None and second.status == 206
    start = int(second.range.removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= SIZE // 2 and second.sent == SIZE - start
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DIGEST
    assert leftovers(cache) == ["img.sif", "img.sif.json", "img.sif.sha256"]


def test_interrupted_download_keeps_the_part_and_a_later_fetch_resumes(tmp_path, server):
    server.faults["/img.sif"] = [Fault(cut_after=SIZE // 3)]
    cache = ImageCache(tmp_path, attempts=1)
    resolved = resolved_image(server.url("img.sif"))
    with pytest.raises(DownloadError) as info:
        cache.fetch(resolved, progress=False)
    assert "connection" in str(info.value) and "kept in img.sif.part to resume" in str(info.value)
    assert leftovers(cache) == ["img.sif.part"]
    kept = (tmp_path / "img.sif.part").stat().st_size
    assert 0 < kept <= SIZE // 3
    path = cache.fetch(resolved, progress=False)
    assert server.log[-1].range == f"bytes={kept}-" and server.log[-1].status == 206
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DIGEST


def test_server_ignoring_range_restarts_from_zero(tmp_path, server):
    server.faults["/img.sif"] = [Fault(cut_after=SIZE // 2), Fault(ignore_range=True)]
    path = ImageCache(tmp_path).fetch(resolved_image(server.url("img.sif")), progress=False)
    assert server.log[1].range is not None and server.log[1].status == 200
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DIGEST


def test_a_stale_part_that_does_not_verify_is_downloaded_again(tmp_path, server):
    (tmp_path / "img.sif.part").write_bytes(os.urandom(1000))  # from some other, broken transfer
    path = ImageCache(tmp_path).fetch(resolved_image(server.url("img.sif")), progress=False)
    assert [(r.range, r.status) for r in server.log] == [("bytes=1000-", 206), (None, 200)]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DIGEST


def test_complete_part_is_finished_without_downloading_again(tmp_path, server):
    (tmp_path / "img.sif.part").write_bytes(PAYLOAD)  # crashed after the last byte
    ImageCache(tmp_path).fetch(resolved_image(server.url("img.sif")), progress=False)
    assert [(r.range, r.status) for r in server.log] == [(f"bytes={SIZE}-", 416)]


def test_wrong_bytes_are_a_checksum_mismatch_and_leave_nothing(tmp_path, server):
    server.faults["/img.sif"] = [Fault(corrupt=True, times=None)]
    cache = ImageCache(tmp_path)
    with pytest.raises(ChecksumMismatch) as info:
        cache.fetch(resolved_image(server.url("img.sif")), progress=False)
    actual = hashlib.sha256(bytes(b ^ 0x5A for b in PAYLOAD)).hexdigest()
    assert (info.value.expected, info.value.actual) == (DIGEST, actual)
    assert f"expected {DIGEST}, got {actual}" in str(info.value)
    assert server.url("img.sif") in str(info.value)
    assert leftovers(cache) == []


def test_404_falls_through_to_the_next_source(tmp_path, server):
    cache = ImageCache(tmp_path)
    path = cache.fetch(resolved_image(server.url("gone.sif"), server.url("img.sif")),
                       progress=False)
    assert [(r.path, r.status) for r in server.log] == [("/gone.sif", 404), ("/img.sif", 200)]
    assert cache.provenance(path)["origin"] == server.url("img.sif")


def test_every_source_failing_is_a_download_error_listing_each(tmp_path, server):
    server.faults["/img.sif"] = [Fault(status=503, times=None)]
    sources = (server.url("gone.sif"), server.url("img.sif"), "http://127.0.0.1:9/x.sif")
    cache = ImageCache(tmp_path)
    with pytest.raises(DownloadError) as info:
        cache.fetch(resolved_image(*sources), progress=False)
    message = str(info.value)
    assert f"- {sources[0]}: HTTP 404" in message
    assert f"- {sources[1]}: HTTP 503" in message
    assert f"- {sources[2]}: connection refused" in message
    assert leftovers(cache) == []


def test_a_stalled_server_times_out_and_the_part_is_kept_to_resume(tmp_path, server):
    server.faults["/img.sif"] = [Fault(stall_after=SIZE // 2, times=None)]
    cache = ImageCache(tmp_path, read_timeout=0.5, attempts=2)
    resolved = resolved_image(server.url("img.sif"))
    with pytest.raises(DownloadError, match="read timed out") as info:
        cache.fetch(resolved, progress=False)
    assert "kept in img.sif.part to resume" in str(info.value)
    assert leftovers(cache) == ["img.sif.part"]  # never the image itself
    assert len(server.log) == 2 and server.log[1].range is not None  # retried, resuming
    server.faults.clear()
    path = cache.fetch(resolved, progress=False)
    assert server.log[-1].status == 206
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DIGEST


def test_a_server_stalling_before_the_first_byte_is_not_retried(tmp_path, server):
    server.faults["/img.sif"] = [Fault(stall_after=0, times=None)]
    cache = ImageCache(tmp_path, read_timeout=0.5, attempts=3)
    with pytest.raises(DownloadError, match="read timed out"):
        cache.fetch(resolved_image(server.url("img.sif")), progress=False)
    assert len(server.log) == 1  # no progress, so no second attempt on this source
    assert leftovers(cache) in ([], ["img.sif.part"])
    assert not (tmp_path / "img.sif").exists()


WORKER = textwrap.dedent("""
    import hashlib, json, logging, sys
    from pathlib import Path
    from dacbench_remote.images.cache import ImageCache
    from dacbench_remote.images.catalog import Catalog

    # The cache logs "waiting for another process fetching ..." when it blocks on the lock.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    resolved = Catalog.load([Path(sys.argv[1])], packaged=False).resolve("Luby")
    path = ImageCache(Path(sys.argv[2])).fetch(resolved, progress=False)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(json.dumps({"path": str(path), "sha256": digest}), flush=True)
""")


def wait_until_waiting(workers: list[subprocess.Popen], count: int, timeout: float) -> set[int]:
    """Indices of workers that logged waiting on the lock, once `count` did (or at timeout)."""
    selector = selectors.DefaultSelector()
    for index, worker in enumerate(workers):
        selector.register(worker.stderr.fileno(), selectors.EVENT_READ, index)
    waiting: set[int] = set()
    buffers = [""] * len(workers)
    deadline = time.monotonic() + timeout
    while len(waiting) < count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            chunk = os.read(key.fd, 65536).decode(errors="replace")  # readable: does not block
            buffers[key.data] += chunk
            if "waiting for another process fetching img.sif" in buffers[key.data]:
                waiting.add(key.data)
            if not chunk:
                selector.unregister(key.fileobj)
    selector.close()
    return waiting


def test_sixteen_processes_download_once(tmp_path, server):
    gate = threading.Event()
    server.faults["/img.sif"] = [Fault(gate=gate, times=None)]
    catalog = write_catalog(tmp_path / "catalog", server.url("img.sif"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(catalog), str(tmp_path / "cache")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(16)
    ]
    try:
        # The server holds the body back until the other 15 processes wait on the lock, so the
        # test really has 16 processes asking for one uncached image at the same time.
        waiting = wait_until_waiting(workers, 15, timeout=120)
        assert len(waiting) == 15, [w.poll() for w in workers]
        deadline = time.monotonic() + 60  # the 16th holds the lock and is on its way to GET
        while not server.requests_for("img.sif") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(server.requests_for("img.sif")) == 1
        gate.set()
        results = []
        for worker in workers:
            out = worker.stdout.read()
            assert worker.wait(timeout=120) == 0, worker.stderr.read()
            results.append(json.loads(out))
    finally:
        gate.set()
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
            worker.stdout.close()
            worker.stderr.close()
    assert {r["path"] for r in results} == {str(tmp_path / "cache" / "img.sif")}
    assert {r["sha256"] for r in results} == {DIGEST}
    gets = server.requests_for("img.sif")
    assert [(r.range, r.status, r.sent) for r in gets] == [(None, 200, SIZE)]


def test_a_real_sif_image_downloads_and_opens_after_verification(tmp_path, server):
    from dacbench_remote.images import sif

    need_tools("mksquashfs")
    root = tmp_path / "rootfs"
    (root / "opt").mkdir(parents=True)
    (root / "opt" / "blob").write_bytes(os.urandom(2 * 1024 * 1024))
    squash = tmp_path / "root.squashfs"
    subprocess.run(["mksquashfs", str(root), str(squash), "-noappend", "-quiet"], check=True,
                   capture_output=True)
    built = tmp_path / "small.sif"
    digest = sif.write_sif(built, deffile=b"Bootstrap: scratch\n", labels={"test": "yes"},
                           squashfs_path=squash)
    assert digest == hashlib.sha256(built.read_bytes()).hexdigest()
    server.files["/small.sif"] = built.read_bytes()
    server.faults["/small.sif"] = [Fault(cut_after=built.stat().st_size // 2)]
    cache = ImageCache(tmp_path / "cache")
    path = cache.fetch(resolved_image(server.url("small.sif"), sha256=digest, image="small.sif"),
                       progress=False)
    assert server.requests_for("small.sif")[1].status == 206
    image = sif.SifImage.open(path)
    assert image.primary_partition() is not None


def fake_singularity(directory: Path, body: str) -> None:
    """A `singularity` on PATH that behaves like `singularity pull --name NAME [--force] URI`."""
    directory.mkdir(exist_ok=True)
    script = directory / "singularity"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)


def test_library_source_goes_through_apptainer_pull(tmp_path, monkeypatch):
    blob = tmp_path / "blob.sif"
    blob.write_bytes(PAYLOAD)
    fake_singularity(tmp_path / "bin", textwrap.dedent(f"""
        while [ "$1" != "--name" ]; do shift; done
        echo "INFO:    pulling $4" >&2
        cp {blob} "$2"
    """))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    cache = ImageCache(tmp_path / "cache")
    path = cache.fetch(resolved_image("library://registry.invalid/img:0.01"), progress=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DIGEST
    assert cache.provenance(path)["origin"] == "library://registry.invalid/img:0.01"


def test_failed_apptainer_pull_reports_its_output(tmp_path, monkeypatch):
    fake_singularity(tmp_path / "bin", 'echo "FATAL:   no such image in registry" >&2\nexit 255\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    with pytest.raises(DownloadError) as info:
        ImageCache(tmp_path / "cache").fetch(resolved_image("library://x/y/img:1"),
                                             progress=False)
    message = str(info.value)
    assert "apptainer pull exited with 255" in message
    assert "FATAL:   no such image in registry" in message


def test_real_apptainer_reports_an_unreachable_registry(tmp_path):
    need_apptainer()
    with pytest.raises(DownloadError, match="apptainer pull exited"):
        ImageCache(tmp_path, read_timeout=5).fetch(
            resolved_image("docker://127.0.0.1:9/none/img:0.01"), progress=False)


def test_catalog_to_cache_end_to_end(tmp_path, server):
    catalog = write_catalog(tmp_path / "benchmarks", server.url("missing.sif"),
                            server.url("img.sif"))
    resolved = Catalog.load([catalog], packaged=False).resolve("LubyBenchmark")
    cache = ImageCache(tmp_path / "cache")
    assert not cache.is_cached(resolved)
    path = cache.fetch(resolved, progress=False)
    assert cache.is_cached(resolved) and path.name == "img.sif"


PROGRESS_WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from dacbench_remote.images.cache import ImageCache
    from dacbench_remote.images.catalog import Catalog

    resolved = Catalog.load([Path(sys.argv[1])], packaged=False).resolve("Luby")
    ImageCache(Path(sys.argv[2])).fetch(resolved, progress=True)
""")


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bar_only_on_a_terminal(tmp_path, server, terminal):
    catalog = write_catalog(tmp_path / "catalog", server.url("img.sif"))
    argv = [sys.executable, "-c", PROGRESS_WORKER, str(catalog), str(tmp_path / "cache")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if terminal:
        leader, follower = pty.openpty()
        with subprocess.Popen(argv, stderr=follower, env=env) as worker:
            os.close(follower)
            output = b""
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            assert worker.wait(timeout=60) == 0
        os.close(leader)
        text = output.decode()
        # tqdm's bar, 80 columns wide on a terminal that reports no size (as this pty)
        assert "img.sif: 100%|" in text and re.search(r" (\d\S*M)/\1 \[", text), text
        assert max(len(line) for line in text.replace("\r", "\n").splitlines()) <= 80
    else:
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0 and result.stderr == ""
