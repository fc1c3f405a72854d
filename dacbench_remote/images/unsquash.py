"""Runs unsquashfs on a (SIF-embedded) squashfs and tells real failures from benign ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

# unsquashfs exits 2 for non-fatal errors; as a normal user these are the device nodes of /dev,
# which bwrap replaces with its own --dev anyway.
BENIGN_PROBLEMS = ("because you're not superuser",)


def unsquashfs(source: Path, target: Path, *, offset: int = 0,
               paths: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    """Unpack `source` (from byte `offset`; only `paths` if given) into `target`.

    Returns unsquashfs's exit code and the problem lines of a failed run: none when it worked,
    or when exit code 2 named only benign problems. Callers turn them into their own error.
    """
    result = subprocess.run(
        ["unsquashfs", "-no-xattrs", "-quiet", "-no-progress", "-offset", str(offset),
         "-dest", str(target), str(source), *paths],
        stdin=subprocess.DEVNULL, capture_output=True, text=True)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and not any(b in line for b in BENIGN_PROBLEMS)]
    if result.returncode == 0 or (result.returncode == 2 and not problems):
        return result.returncode, []
    return result.returncode, problems or ["(no output)"]
