"""Time the bwrap runtime from start() until the server accepts on both sockets: cold and warm.

Cold = a fresh extraction cache (sha256 of the image + unsquashfs + start); warm = the cache is
reused (remembered digest, no extraction). Run as the user you care about, e.g.
    runuser -u someuser -- /path/to/venv/bin/python scripts/bench_bwrap_start.py IMAGE.sif
The image's runscript must start the real server (python3 -m dacbench_remote.server).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

from dacbench_remote._sys.sockets import DATA_SUFFIX, new_socket_path
from dacbench_remote.runtimes.bwrap import BwrapRuntime
from dacbench_remote.runtimes.rootfs import force_rmtree, fuse_usable


def accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        try:
            client.connect(str(path))
        except OSError:
            return False
    return True


def start_once(image: Path, cache: Path, use_fuse: bool) -> tuple[float, dict]:
    """Seconds from a new runtime's start() until the control and data sockets accept."""
    began = time.perf_counter()
    runtime = BwrapRuntime(image, use_fuse=use_fuse, extract_cache=cache)
    socket_path = new_socket_path("bench")
    server = runtime.start(socket_path)
    data = Path(str(socket_path) + DATA_SUFFIX)
    try:
        while not (accepts(socket_path) and accepts(data)):
            if not server.alive():
                raise SystemExit(f"server died:\n{server.output_tail()}")
            time.sleep(0.002)
        return time.perf_counter() - began, runtime.describe()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--cold", type=int, default=3, help="cold starts (fresh caches)")
    parser.add_argument("--warm", type=int, default=10, help="warm starts")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-bwrap-", dir="/var/tmp"))
    try:
        cold, warm = [], []
        for index in range(args.cold):
            seconds, facts = start_once(args.image, scratch / f"cold-{index}", False)
            cold.append(seconds)
            print(f"cold {index}: {seconds:.3f} s (prepare {facts['prepare_seconds']:.3f} s, "
                  f"extract {facts['extract_seconds']:.3f} s)")
        for _ in range(args.warm):
            warm.append(start_once(args.image, scratch / "cold-0", False)[0])
        print(f"extracted  cold: median {statistics.median(cold):.3f} s over {len(cold)}")
        print(f"extracted  warm: median {statistics.median(warm):.3f} s, min {min(warm):.3f} s "
              f"over {len(warm)}")
        if fuse_usable():
            fuse = [start_once(args.image, scratch / "unused", True)[0] for _ in range(args.warm)]
            print(f"squashfuse     : median {statistics.median(fuse):.3f} s, min "
                  f"{min(fuse):.3f} s over {len(fuse)}")
        print(f"image size: {args.image.stat().st_size / 1e6:.1f} MB; "
              f"extracted size: {_tree_size(scratch / 'cold-0') / 1e6:.1f} MB")
    finally:
        force_rmtree(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def _tree_size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


if __name__ == "__main__":
    main()
