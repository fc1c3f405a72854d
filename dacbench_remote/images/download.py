"""Getting the bytes of one image from one source into a `.part` file, hashing as they arrive.

Nothing here decides whether the bytes are right: callers compare the returned sha256 with the
catalog before the file is moved into place. HTTP downloads (also an OCI registry's blob GET)
resume a kept `.part` with Range.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import requests
from tqdm import tqdm

from .._sys.files import hash_file, sha256_file

CHUNK = 1 << 20
# Network reads are smaller: bytes of an unfinished read are lost when a connection breaks.
NET_CHUNK = 1 << 18


class SourceFailed(Exception):
    """One source could not deliver the image (the caller tries the next one); not user-facing."""


@dataclass(frozen=True)
class Fetched:
    """What a source delivered: the sha256 of the whole `.part`, and whether it was resumed."""

    sha256: str
    resumed: bool = False


def _terminal_width(stream: IO[str]) -> int:
    """The columns of the terminal `stream` writes to; 0 when unknown."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):  # not a real terminal (or a test's stand-in)
        return 0


class Progress:
    """A progress bar on stderr (tqdm's: it fits the terminal), drawn only when that is a
    terminal, so logs and CI output stay quiet."""

    def __init__(self, label: str, total: int | None, *, enabled: bool = True,
                 stream: IO[str] | None = None):

        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.stream.isatty()
        # A terminal that reports no size (a bare pty, some CI consoles) gets 80x24: tqdm would
        # draw nothing at all in a zero-line screen.
        sized = _terminal_width(self.stream) > 0
        self.bar = tqdm(desc=label or None, total=total, unit="B", unit_scale=True,
                        unit_divisor=1000, file=self.stream, disable=not self.enabled,
                        mininterval=0.1, dynamic_ncols=sized, ncols=None if sized else 80,
                        nrows=None if sized else 24, leave=True)
        self._started = False

    def update(self, done: int, *, force: bool = False) -> None:
        """Show `done` bytes so far (redrawn at most ten times a second unless `force`)."""
        if not self.enabled:
            return
        if not self._started:  # a resumed download starts from what was there: not in the rate
            self._started = True
            self.bar.initial = self.bar.n = self.bar.last_print_n = done
        else:
            self.bar.update(done - self.bar.n)
        if force:
            self.bar.refresh()

    def close(self, done: int) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self.update(done, force=True)
        self.bar.close()


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header; None where unknown."""
    match = _CONTENT_RANGE.match(header or "")
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return first, total


def _describe(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.ReadTimeout) or "Read timed out" in str(exc):
        return "read timed out (server stalled)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return f"connection cut mid-download ({str(exc)[:160]})"
    if isinstance(exc, requests.ConnectionError):
        reason = str(exc.args[0]) if exc.args else str(exc)
        if "Connection refused" in reason:
            return "connection refused"
        if "IncompleteRead" in reason or "Connection broken" in reason:
            return f"connection cut mid-download ({reason[:160]})"
        return f"connection failed ({reason[:200]})"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


class _Interrupted(Exception):
    """The transfer stopped part-way; the .part is kept so the next attempt resumes it."""


def _stream_once(url: str, part: Path, timeout: tuple[float, float], label: str,
                 progress: bool, headers: dict[str, str] | None = None,
                 session: requests.Session | None = None) -> Fetched:
    """One GET, resuming `part` if it holds bytes; raises SourceFailed, or _Interrupted.

    `headers` (a registry's Authorization) and `session` (one that vets redirects) come from
    callers that fetch a registry blob; plain HTTP sources need neither.
    """
    offset = part.stat().st_size if part.exists() else 0
    # identity: a gzip-encoded body would make byte ranges refer to other bytes than we store.
    headers = {**(headers or {}), "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"

    get = session.get if session is not None else requests.get
    with get(url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code == 416 and offset:
            _, total = _content_range(response.headers.get("Content-Range"))
            if total == offset:  # the kept .part is already complete
                return Fetched(sha256_file(part), resumed=True)
            part.unlink()
            raise _Interrupted("server rejected the resume range; starting over")
        if response.status_code == 206 and offset:
            first, _ = _content_range(response.headers.get("Content-Range"))
            if first != offset:
                part.unlink()
                raise _Interrupted(f"server answered range from byte {first}, not {offset}")
            mode, digest, resumed = "ab", hash_file(part), True
        elif response.status_code == 200:
            # Also the answer of servers that ignore Range: the body is the whole file.
            mode, digest, resumed, offset = "wb", hashlib.sha256(), False, 0
        else:
            raise SourceFailed(f"HTTP {response.status_code} {response.reason}")
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length and length.isdigit() else None
        bar = Progress(label, expected, enabled=progress)
        done = offset
        with part.open(mode) as handle:
            try:
                for block in response.iter_content(NET_CHUNK):
                    handle.write(block)
                    digest.update(block)
                    done += len(block)
                    bar.update(done)
            finally:
                handle.flush()
                bar.close(done)
        if expected is not None and done < expected:
            raise _Interrupted(f"connection closed after {done} of {expected} bytes")
        return Fetched(digest.hexdigest(), resumed=resumed)


def download_http(url: str, part: Path, *, connect_timeout: float = 15.0,
                  read_timeout: float = 60.0, attempts: int = 3, label: str = "",
                  progress: bool = True, headers: dict[str, str] | None = None,
                  session: requests.Session | None = None) -> Fetched:
    """Download `url` into `part`, resuming what is there; retry while attempts make progress.

    An attempt that ends without adding bytes (refused, HTTP error, stall before the first byte)
    gives up on this source at once. The `.part` is kept after a failure so that a later call
    (or the next source with the same file) resumes it.
    """
    label = label or url.rsplit("/", 1)[-1]
    reason = "no attempt made"
    for _ in range(max(1, attempts)):
        before = part.stat().st_size if part.exists() else 0
        try:
            return _stream_once(url, part, (connect_timeout, read_timeout), label, progress,
                                headers, session)
        except _Interrupted as exc:
            reason = str(exc)
        except requests.RequestException as exc:
            reason = _describe(exc)
        # Retry only an attempt that moved (more bytes, or a .part discarded to start over).
        if (part.stat().st_size if part.exists() else 0) == before:
            break
    kept = part.stat().st_size if part.exists() else 0
    suffix = f" ({kept} bytes kept in {part.name} to resume)" if kept else ""
    raise SourceFailed(reason + suffix)


def copy_local(source: Path, part: Path, *, label: str = "", progress: bool = True) -> Fetched:
    """Copy a local file into `part`, hashing it on the way."""
    digest = hashlib.sha256()
    try:
        total = source.stat().st_size
        bar = Progress(label or source.name, total, enabled=progress)
        done = 0
        with source.open("rb") as src, part.open("wb") as dst:
            while block := src.read(CHUNK):
                dst.write(block)
                digest.update(block)
                done += len(block)
                bar.update(done)
        bar.close(done)
    except OSError as exc:
        raise SourceFailed(f"cannot copy {source}: {exc.strerror or exc}") from exc
    return Fetched(digest.hexdigest())
