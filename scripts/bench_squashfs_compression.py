"""Compare squashfs compressors for our images: size, build time, and the reads a start does.

Apptainer builds gzip squashfs and says "Non-gzip squashfs compression might not work with some
installations" (internal/pkg/build/assemblers/sif.go): old kernels and squashfuse builds lack
zstd. This measures what gzip costs against zstd level 3 (our builder's former choice, the
baseline of the ratios) on a real image's root filesystem, all in the same run:

* size of the squashfs, and mksquashfs time;
* unsquashfs time: the bwrap runtime's cold start without FUSE;
* server imports from a fresh mount (`python3 -c "import numpy, gymnasium, Pyro5,
  dacbench_remote.server"` chrooted into it): through the kernel's squashfs (Apptainer's
  setuid mode) and through squashfuse_ll (unprivileged Apptainer, and bwrap where FUSE works).
  A fresh mount has nothing decompressed yet; the image file itself stays in the page cache.

Run as root (mount, chroot):  python scripts/bench_squashfs_compression.py IMAGE.sif
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from dacbench_remote.images.sif import SifImage

BASELINE = "zstd-3"
COMPRESSORS = {
    BASELINE: ["-comp", "zstd", "-Xcompression-level", "3"],
    "gzip-9": ["-comp", "gzip"],  # mksquashfs's default level, what `apptainer build` writes
    "gzip-6": ["-comp", "gzip", "-Xcompression-level", "6"],
    "gzip-1": ["-comp", "gzip", "-Xcompression-level", "1"],
}
IMPORTS = "import numpy, gymnasium, Pyro5, dacbench_remote.server"


def timed(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


@contextlib.contextmanager
def mounted(squashfs: Path, point: Path, how: str) -> Iterator[Path]:
    point.mkdir(exist_ok=True)
    if how == "kernel":
        command = ["mount", "-t", "squashfs", "-o", "loop,ro", str(squashfs), str(point)]
    else:
        command = ["squashfuse_ll", str(squashfs), str(point)]
    subprocess.run(command, check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def import_seconds(squashfs: Path, point: Path, how: str) -> float:
    with mounted(squashfs, point, how) as root:
        return timed(["chroot", str(root), "/usr/bin/env", "-i",
                      "PYTHONPATH=/opt/dacbench-remote", "PYTHONDONTWRITEBYTECODE=1",
                      "/usr/bin/python3", "-c", IMPORTS])


def measure(root: Path, scratch: Path, repeats: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {}
    squashfs = {}
    for name, options in COMPRESSORS.items():
        squashfs[name] = scratch / f"{name}.squashfs"
        seconds = timed(["mksquashfs", str(root), str(squashfs[name]), "-noappend",
                         "-no-progress", "-quiet", *options])
        results[name] = {"size MB": [squashfs[name].stat().st_size / 1e6],
                         "mksquashfs s": [seconds], "unsquashfs s": [],
                         "imports, kernel mount s": [], "imports, squashfuse s": []}
    for _ in range(repeats):  # interleaved, so load drifts hit all alike
        for name in COMPRESSORS:
            target = scratch / "unpacked"
            results[name]["unsquashfs s"].append(timed(
                ["unsquashfs", "-q", "-n", "-d", str(target), str(squashfs[name])]))
            shutil.rmtree(target)
            for how, key in (("kernel", "imports, kernel mount s"),
                             ("fuse", "imports, squashfuse s")):
                results[name][key].append(import_seconds(squashfs[name], scratch / "mnt", how))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path, help="a .sif whose runscript starts our server")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-squashfs-", dir="/var/tmp"))
    try:
        image = SifImage.open(args.image)
        root = scratch / "root"
        subprocess.run(["unsquashfs", "-q", "-n", "-o", str(image.squashfs_partition().offset),
                        "-d", str(root), str(args.image)], check=True, stdout=subprocess.DEVNULL)
        results = measure(root, scratch, args.repeats)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    names = list(COMPRESSORS)
    print(f"median of {args.repeats} runs (one build); ratios against {BASELINE}")
    print(f"{'':<25}" + "".join(f"{name:>9}" for name in names)
          + "".join(f"{name + '/zstd':>13}" for name in names[1:]))
    for key in results[BASELINE]:
        medians = [statistics.median(results[name][key]) for name in names]
        print(f"{key:<25}" + "".join(f"{m:>9.3f}" for m in medians)
              + "".join(f"{m / medians[0]:>12.2f}x" for m in medians[1:]))


if __name__ == "__main__":
    main()
