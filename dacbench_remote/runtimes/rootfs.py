"""A SIF image's root filesystem on the host without root: squashfuse mount or cached extraction.

Extraction goes into a per-user cache keyed by the image's sha256, under a file lock, into a
temporary directory renamed into place when complete; the sha256 itself is remembered in a
sidecar keyed by path, size, mtime and inode so that a warm start does not re-hash the image.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .._sys.files import atomic_write_text, locked, private_dir, sha256_file, user_runtime_dir
from .._sys.procfs import descendants
from ..config import default_cache_dir
from ..errors import RuntimeUnavailable, UnpackError
from ..images.unsquash import unsquashfs

TMP_PREFIX = ".tmp-"


def default_rootfs_cache() -> Path:
    """Where extracted root filesystems live: <user cache>/rootfs/<sha256>/."""
    return default_cache_dir() / "rootfs"


def mount_base_dir(create: bool = True) -> Path:
    """This user's private (0700) directory for squashfuse mount points."""
    path = user_runtime_dir("dacbench-remote-mnt")
    return private_dir(path, "mount directory", "remove it") if create else path


# --- hashing ---------------------------------------------------------------------------------

def image_sha256(image: Path, cache: Path) -> str:
    """The image's sha256, remembered in `cache`/.digests/ while its path, size and mtime hold."""
    image = Path(image).resolve()
    info = image.stat()
    key = {"path": str(image), "size": info.st_size, "mtime_ns": info.st_mtime_ns,
           "inode": info.st_ino, "device": info.st_dev}
    sidecar = cache / ".digests" / (hashlib.sha256(str(image).encode()).hexdigest()[:32] + ".json")
    try:
        remembered = json.loads(sidecar.read_text())
        if {k: remembered.get(k) for k in key} == key and len(remembered.get("sha256", "")) == 64:
            return remembered["sha256"]
    except (OSError, ValueError):
        pass  # no or unreadable sidecar: hash below and rewrite it
    digest = sha256_file(image)
    atomic_write_text(sidecar, json.dumps({**key, "sha256": digest}), durable=False)
    return digest


# --- extraction ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExtractedRoot:
    path: Path
    extracted_now: bool  # False when an earlier extraction was reused
    seconds: float


def force_rmtree(path: Path) -> None:
    """Remove a tree even where the image made directories read-only (e.g. 0555 /proc)."""
    if not path.exists() and not path.is_symlink():
        return
    for root, _dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(root, 0o700)
    shutil.rmtree(path)


def extract_rootfs(image: Path, offset: int, digest: str, cache: Path) -> ExtractedRoot:
    """Extract the squashfs at `offset` of `image` into `cache`/`digest` once; reuse it after."""
    started = time.monotonic()
    final = cache / digest
    if final.is_dir():
        return ExtractedRoot(final, False, time.monotonic() - started)
    if shutil.which("unsquashfs") is None:
        raise RuntimeUnavailable(
            "unsquashfs is not installed (needed to unpack images without /dev/fuse); "
            "install squashfs-tools, e.g. `apt-get install squashfs-tools`"
        )
    cache.mkdir(parents=True, exist_ok=True)
    with locked(cache / f"{digest}.lock"):
        if final.is_dir():  # another process extracted it while we waited for the lock
            return ExtractedRoot(final, False, time.monotonic() - started)
        # Leftovers of an extraction that was killed: nobody else can be writing them now.
        for stale in cache.glob(f"{TMP_PREFIX}{digest}-*"):
            force_rmtree(stale)
        work = Path(tempfile.mkdtemp(dir=cache, prefix=f"{TMP_PREFIX}{digest}-"))
        try:
            target = work / "rootfs"
            code, problems = unsquashfs(Path(image), target, offset=offset)
            if problems:
                raise UnpackError(
                    f"unpacking {image} into {cache} failed (unsquashfs exit code {code}); is "
                    "the disk full or the image damaged?\n" + "\n".join(problems[-15:]))
            os.rename(target, final)
        finally:
            force_rmtree(work)
    return ExtractedRoot(final, True, time.monotonic() - started)


# --- squashfuse ------------------------------------------------------------------------------

def fusermount_binary() -> str | None:
    return shutil.which("fusermount3") or shutil.which("fusermount")


def squashfuse_binary() -> str | None:
    """squashfuse_ll (the faster low-level one Apptainer prefers) or plain squashfuse."""
    return shutil.which("squashfuse_ll") or shutil.which("squashfuse")


def fuse_usable() -> bool:
    """True if this user can mount with squashfuse (tools installed and /dev/fuse read-writable)."""
    return (squashfuse_binary() is not None and fusermount_binary() is not None
            and os.access("/dev/fuse", os.R_OK | os.W_OK))


def _mount_device(mount_point: Path) -> str | None:
    """The major:minor of the filesystem mounted at `mount_point`, from our mountinfo."""
    for device, point, _fstype in mountinfo_entries():
        if point == str(mount_point):
            return device
    return None


def _unescape(field: str) -> str:
    # /proc/*/mountinfo escapes space, tab, newline and backslash as octal.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


class SquashfuseMount:
    """A squashfuse mount of one image partition, detached lazily once a container holds it."""

    def __init__(self, image: Path, offset: int):
        self.image = image
        self.offset = offset
        self.path = Path(tempfile.mkdtemp(dir=mount_base_dir(), prefix=f"{os.getpid()}-"))
        result = subprocess.run(
            [squashfuse_binary() or "squashfuse", "-o", f"offset={offset}", str(image),
             str(self.path)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )
        self.device = _mount_device(self.path) if result.returncode == 0 else None
        if self.device is None:
            with contextlib.suppress(OSError):
                self.path.rmdir()
            output = (result.stdout + result.stderr).strip() or f"exit code {result.returncode}"
            raise RuntimeUnavailable(f"squashfuse could not mount {image}: {output}")
        self.detached = False

    def held_by_tree(self, pid: int) -> bool:
        """True once a process under `pid` (the container) has this filesystem mounted."""
        return any((self.device, "/") == (device, point)
                   for child in descendants(pid)
                   for device, point, _fstype in mountinfo_entries(child))

    def detach(self) -> None:
        """Lazily unmount: gone from the host now, alive until the container's last use."""
        if self.detached:
            return
        self.detached = True
        lazy_unmount(self.path)


def lazy_unmount(mount_point: Path) -> str | None:
    """Detach a FUSE mount of ours and remove its directory; None on success, else the error."""
    fusermount = fusermount_binary()
    argv = ([fusermount, "-u", "-z", str(mount_point)] if fusermount
            else ["umount", "-l", str(mount_point)])
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    with contextlib.suppress(OSError):
        mount_point.rmdir()
    if result.returncode != 0:
        return (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"
    return None


def mountinfo_entries(pid: str | int = "self") -> list[tuple[str, str, str]]:
    """(device, mount point, filesystem type) for each mount seen by process `pid`."""
    try:
        lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        fstype = line.split(" - ", 1)[1].split()[0]
        entries.append((fields[2], _unescape(fields[4]), fstype))
    return entries
