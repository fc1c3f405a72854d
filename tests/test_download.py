"""Pieces of the downloader that need no server: hashing, progress bar, ranges, source errors."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from dacbench_remote._sys.files import sha256_file
from dacbench_remote.images.download import Progress, SourceFailed, _content_range, copy_local
from dacbench_remote.images.sources import fetch_source, pull_apptainer


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_sha256_file_whole_and_prefix(tmp_path):
    data = bytes(range(256)) * 5000
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path, limit=1000) == hashlib.sha256(data[:1000]).hexdigest()


def test_progress_draws_on_a_terminal():
    stream = FakeTerminal()
    bar = Progress("img.sif", 2_000_000, stream=stream)
    bar.update(500_000, force=True)
    bar.close(2_000_000)
    text = stream.getvalue()
    assert "\rimg.sif:  25%|" in text and "500k/2.00M" in text
    assert "img.sif: 100%|" in text and "2.00M/2.00M" in text and text.endswith("\n")


def test_progress_without_known_size():
    stream = FakeTerminal()
    bar = Progress("img.sif", None, stream=stream)
    bar.close(1500)
    assert "img.sif: 1.50kB" in stream.getvalue()


def test_progress_of_a_resumed_download_counts_only_new_bytes_in_its_rate():
    stream = FakeTerminal()
    bar = Progress("img.sif", 2_000_000, stream=stream)
    bar.update(1_500_000)  # what an earlier attempt left
    assert bar.bar.format_dict["initial"] == 1_500_000 and bar.bar.n == 1_500_000
    bar.close(2_000_000)
    assert "2.00M/2.00M" in stream.getvalue()


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_is_quiet_when_not_a_terminal_or_disabled(enabled):
    stream = io.StringIO() if enabled else FakeTerminal()
    bar = Progress("img.sif", 10, stream=stream, enabled=enabled)
    bar.update(5, force=True)
    bar.close(10)
    assert stream.getvalue() == ""


@pytest.mark.parametrize(
    ("header", "expected"),
    [("bytes 100-199/200", (100, 200)), ("bytes */200", (None, 200)),
     ("bytes 0-9/*", (0, None)), (None, (None, None)), ("junk", (None, None))],
)
def test_content_range(header, expected):
    assert _content_range(header) == expected


def test_copy_local_missing_file_names_it(tmp_path):
    with pytest.raises(SourceFailed, match=r"cannot copy .*nope\.sif: No such file"):
        copy_local(tmp_path / "nope.sif", tmp_path / "x.part", progress=False)


def test_file_urls_are_local_copies(tmp_path):
    src = tmp_path / "a.sif"
    src.write_bytes(b"abc")
    fetched = fetch_source(f"file://{src}", tmp_path / "a.part", progress=False)
    assert fetched.sha256 == hashlib.sha256(b"abc").hexdigest() and not fetched.resumed
    assert (tmp_path / "a.part").read_bytes() == b"abc"


@pytest.mark.parametrize("uri", ["oras://ghcr.io/x/y:1", "library://x/y/z:1", "docker://x/y:1"])
def test_pull_without_apptainer_says_what_is_needed(tmp_path, monkeypatch, uri):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(SourceFailed) as info:
        pull_apptainer(uri, tmp_path / "x.part", progress=False)
    message = str(info.value)
    assert "Apptainer (or SingularityCE) is not installed" in message
    assert f"needed to pull {uri.split('://')[0]}:// sources" in message
    assert "add an https:// or oras:// source" in message


def test_pull_uses_apptainer_without_its_singularity_alias(tmp_path, monkeypatch):
    # A stand-in `apptainer` (not the real one: it cannot be installed here) that records its
    # arguments and writes the --name file as `apptainer pull` does.
    fake = tmp_path / "apptainer"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\n'
                    'while [ "$1" != --name ]; do shift; done; echo image > "$2"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    fetched = pull_apptainer("docker://x/y:1", tmp_path / "x.part", progress=False)
    assert (tmp_path / "argv").read_text().split() == [
        "pull", "--name", str(tmp_path / "x.part"), "--force", "docker://x/y:1"]
    assert fetched.sha256 == hashlib.sha256(b"image\n").hexdigest()


def test_unreachable_http_source_is_a_source_failure(tmp_path):
    # Port 9 on 127.0.0.1 (discard) is closed on any sane test machine.
    with pytest.raises(SourceFailed, match="connection refused"):
        fetch_source("http://127.0.0.1:9/x.sif", tmp_path / "x.part", progress=False)
    assert not Path(tmp_path / "x.part").exists()
