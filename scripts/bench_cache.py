"""Measure the image cache: download+verify speed, cheap re-check vs full re-hash, 16 processes.

    python scripts/bench_cache.py [--mb 256]

Serves a random file from 127.0.0.1 (http.server), so the numbers are the cache's own overhead
(hashing, writing, locking), not a network's. A report, never a test assertion.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
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

WORKER = """
import sys
from pathlib import Path
from dacbench_remote.images.cache import ImageCache
from dacbench_remote.images.catalog import ResolvedImage
r = ResolvedImage("Luby", "bench", "exp:0", "big.sif", sys.argv[1], (sys.argv[2],), None, "",
                  True, Path("bench.toml"))
ImageCache(Path(sys.argv[3])).fetch(r, progress=False)
"""


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="image size in MB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        served = tmp / "served"
        served.mkdir()
        data = os.urandom(args.mb * 1024 * 1024)
        (served / "big.sif").write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        del data
        handler = functools.partial(Quiet, directory=str(served))
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/big.sif"
        resolved = ResolvedImage("Luby", "bench", "exp:0", "big.sif", digest, (url,), None, "",
                                 True, Path("bench.toml"))
        try:
            cache = ImageCache(tmp / "cache")
            start = time.perf_counter()
            path = cache.fetch(resolved, progress=False)
            download = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(100):
                cache.fetch(resolved, progress=False)
            cheap = (time.perf_counter() - start) / 100
            start = time.perf_counter()
            cache.verify()
            full = time.perf_counter() - start
            print(f"image size                      {args.mb} MB")
            print(f"download + verify (127.0.0.1)   {download:.2f} s  "
                  f"({args.mb / download:.0f} MB/s)")
            print(f"fetch of a cached image         {cheap * 1e6:.0f} us (size+mtime check)")
            print(f"full re-hash (cache verify)     {full:.2f} s  ({args.mb / full:.0f} MB/s)")
            print(f"ratio full/cheap                {full / cheap:.0f}x")

            env = {**os.environ, "PYTHONPATH": str(REPO)}
            cold = tmp / "cache16"
            start = time.perf_counter()
            workers = [subprocess.Popen([sys.executable, "-c", WORKER, digest, url, str(cold)],
                                        env=env) for _ in range(16)]
            codes = [w.wait() for w in workers]
            wall = time.perf_counter() - start
            print(f"16 processes, cold cache        {wall:.2f} s wall, exit codes "
                  f"{sorted(set(codes))}, one image: {path.stat().st_size == args.mb << 20}")
        finally:
            httpd.shutdown()
            httpd.server_close()


if __name__ == "__main__":
    main()
