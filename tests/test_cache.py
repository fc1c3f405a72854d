"""The image cache with local-file sources and a tiny builder: verification, records, maintenance.

HTTP downloads, Apptainer pulls and concurrent processes are in tests/integration/test_download.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from dacbench_remote.errors import (
    BadConfig,
    BuildError,
    ChecksumMismatch,
    DownloadError,
    ImageNotFound,
    RecipeError,
)
from dacbench_remote.images.cache import ImageCache, default_builder
from dacbench_remote.images.catalog import ResolvedImage
from dacbench_remote.images.wheelhouse import PipSources

PAYLOAD = os.urandom(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


def resolved_image(tmp_path: Path, *sources: str, sha256: str = DIGEST,
                   recipe: Path | None = None) -> ResolvedImage:
    return ResolvedImage(
        benchmark="Luby", family="toy", experiment="exp:0.01", image="toy-0.01.sif",
        sha256=sha256, sources=tuple(sources), recipe=recipe, dacbench="0.5.6", default=True,
        catalog_file=tmp_path / "benchmarks" / "toy.toml",
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "published" / "toy-0.01.sif"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipes" / "toy.def"
    path.parent.mkdir()
    path.write_text("Bootstrap: scratch\n")
    return path


class TinyBuilder:
    """Writes bytes derived from the recipe, counts calls, and can misreport its digest."""

    def __init__(self, *, report: str | None = "real", write: bool = True):
        self.calls = 0
        self.sources: list = []  # the pip sources of each call
        self.report, self.write = report, write

    def __call__(self, recipe: Path, output: Path, progress: bool, sources) -> str | None:
        self.calls += 1
        self.sources.append(sources)
        data = b"built:" + recipe.read_bytes()
        if self.write:
            output.write_bytes(data)
        return hashlib.sha256(data).hexdigest() if self.report == "real" else self.report


def cache_files(cache: ImageCache) -> list[str]:
    return sorted(p.name for p in cache.root.iterdir() if not p.name.endswith(".lock"))


def test_fetch_copies_verifies_and_records(tmp_path, source):
    cache = ImageCache(tmp_path / "cache")
    resolved = resolved_image(tmp_path, str(source))
    assert not cache.is_cached(resolved) and cache.cached_path(resolved) is None
    path = cache.fetch(resolved, progress=False)
    assert path == cache.path_for(resolved) == tmp_path / "cache" / "toy-0.01.sif"
    assert path.read_bytes() == PAYLOAD
    assert cache.is_cached(resolved) and cache.cached_path(resolved) == path
    assert cache_files(cache) == ["toy-0.01.sif", "toy-0.01.sif.json", "toy-0.01.sif.sha256"]
    record = cache.provenance(path)
    assert record["origin"] == str(source) and record["sha256"] == DIGEST
    assert record["fetched_at"].endswith("+00:00")
    # The digest record is `sha256sum -c` compatible, plus size and mtime for cheap re-checks.
    first, second = (tmp_path / "cache" / "toy-0.01.sif.sha256").read_text().splitlines()
    assert first == f"{DIGEST}  toy-0.01.sif"
    assert second == f"# size={len(PAYLOAD)} mtime_ns={path.stat().st_mtime_ns}"


def test_a_cached_image_is_reused_without_touching_the_source(tmp_path, source):
    cache = ImageCache(tmp_path / "cache")
    resolved = resolved_image(tmp_path, str(source))
    cache.fetch(resolved, progress=False)
    source.unlink()
    assert cache.fetch(resolved, progress=False).read_bytes() == PAYLOAD


def test_wrong_bytes_raise_checksum_mismatch_and_leave_nothing(tmp_path, source):
    cache = ImageCache(tmp_path / "cache")
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatch) as info:
        cache.fetch(resolved_image(tmp_path, str(source), sha256=wrong), progress=False)
    assert info.value.expected == wrong and info.value.actual == DIGEST
    assert f"expected {wrong}, got {DIGEST}" in str(info.value)
    assert str(source) in str(info.value)
    assert cache_files(cache) == []


def test_failed_sources_fall_through_to_the_next(tmp_path, source):
    cache = ImageCache(tmp_path / "cache")
    resolved = resolved_image(tmp_path, str(tmp_path / "missing.sif"), str(source))
    path = cache.fetch(resolved, progress=False)
    assert cache.provenance(path)["origin"] == str(source)


def test_all_sources_failing_lists_each_one(tmp_path, source):
    bad = tmp_path / "bad.sif"
    bad.write_bytes(b"not the image")
    resolved = resolved_image(tmp_path, str(tmp_path / "missing.sif"), str(bad))
    with pytest.raises(DownloadError) as info:
        ImageCache(tmp_path / "cache").fetch(resolved, progress=False)
    message = str(info.value)
    assert "could not download toy-0.01.sif (Luby exp:0.01) from any source" in message
    assert f"- {tmp_path / 'missing.sif'}: cannot copy" in message
    assert "No such file or directory" in message
    assert f"- {bad}: sha256 mismatch: expected {DIGEST}, got" in message


def test_no_sources_and_not_cached_says_what_to_do(tmp_path, recipe):
    with pytest.raises(ImageNotFound) as info:
        ImageCache(tmp_path / "cache").fetch(resolved_image(tmp_path, recipe=recipe))
    message = str(info.value)
    assert "toy-0.01.sif (Luby exp:0.01) is not in the cache" in message
    assert "lists no sources" in message and f"build it from {recipe} with --build" in message


def test_a_file_copied_into_the_cache_is_adopted_after_a_full_hash(tmp_path):
    cache = ImageCache(tmp_path / "cache")
    cache.root.mkdir()
    (cache.root / "toy-0.01.sif").write_bytes(PAYLOAD)
    resolved = resolved_image(tmp_path)  # no sources at all
    assert not cache.is_cached(resolved)  # no record yet: not trusted
    path = cache.fetch(resolved, progress=False)
    assert cache.is_cached(resolved)
    assert cache.provenance(path)["origin"] == "found-in-cache"


def test_a_touched_file_is_rehashed_and_a_changed_one_replaced(tmp_path, source):
    cache = ImageCache(tmp_path / "cache")
    resolved = resolved_image(tmp_path, str(source))
    path = cache.fetch(resolved, progress=False)
    os.utime(path, ns=(1, 1))
    assert not cache.is_cached(resolved)
    assert cache.fetch(resolved, progress=False) == path and cache.is_cached(resolved)
    path.write_bytes(b"x" * len(PAYLOAD))  # same size, new mtime: re-hashed, replaced
    assert cache.fetch(resolved, progress=False).read_bytes() == PAYLOAD


def test_verify_finds_silent_corruption_and_can_remove_it(tmp_path, source):
    cache = ImageCache(tmp_path / "cache")
    resolved = resolved_image(tmp_path, str(source))
    path = cache.fetch(resolved, progress=False)
    stat = path.stat()
    with path.open("r+b") as handle:  # flip one byte, keep size and mtime: the cheap check passes
        handle.seek(1000)
        handle.write(bytes([PAYLOAD[1000] ^ 0xFF]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.is_cached(resolved)
    (report,) = cache.verify()
    assert not report.ok and report.expected == DIGEST and report.actual != DIGEST
    assert "sha256 mismatch" in report.problem
    (report,) = cache.verify(remove=True)
    assert report.problem.endswith("; removed")
    assert not path.exists() and not cache.is_cached(resolved)


def test_verify_reports_files_without_a_record(tmp_path, source):
    cache = ImageCache(tmp_path / "cache")
    cache.fetch(resolved_image(tmp_path, str(source)), progress=False)
    (cache.root / "stray.sif").write_bytes(b"?")
    reports = {r.name: r for r in cache.verify()}
    assert reports["toy-0.01.sif"].ok
    assert not reports["stray.sif"].ok and "no record of its digest" in reports["stray.sif"].problem


def test_list_and_prune(tmp_path, source):
    cache = ImageCache(tmp_path / "cache")
    cache.fetch(resolved_image(tmp_path, str(source)), progress=False)
    (cache.root / "other.sif.part").write_bytes(b"half")
    (cache.root / "gone.sif.json").write_text("{}")
    entries = {(e.name, e.state) for e in cache.list()}
    assert entries == {("toy-0.01.sif", "verified"), ("other.sif", "partial")}
    removed = cache.prune()  # partial downloads and orphaned records only
    assert sorted(p.name for p in removed) == ["gone.sif.json", "other.sif.part"]
    assert cache.prune(keep={"toy-0.01.sif"}) == []
    removed = cache.prune(keep=set())
    assert sorted(p.name for p in removed) == [
        "toy-0.01.sif", "toy-0.01.sif.json", "toy-0.01.sif.sha256"]
    assert cache_files(cache) == []


def test_list_of_a_cache_that_does_not_exist_is_empty(tmp_path):
    cache = ImageCache(tmp_path / "never")
    assert cache.list() == [] and cache.verify() == [] and cache.prune(keep=set()) == []


def test_unwritable_cache_dir_is_a_config_error(tmp_path, source):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = ImageCache(blocker / "cache")
    with pytest.raises(BadConfig, match=r"cache directory .*file/cache is not writable .*"
                                        r"DACBENCH_REMOTE_CACHE"):
        cache.fetch(resolved_image(tmp_path, str(source)), progress=False)


# -- local builds ----------------------------------------------------------------------------------


def test_unpublished_image_needs_build(tmp_path, recipe):
    resolved = resolved_image(tmp_path, sha256="", recipe=recipe)
    with pytest.raises(ImageNotFound, match=r"Luby exp:0\.01 has no pinned image .*--build"):
        ImageCache(tmp_path / "cache", builder=TinyBuilder()).fetch(resolved)


def test_build_records_the_local_digest_and_is_done_once(tmp_path, recipe):
    builder = TinyBuilder()
    cache = ImageCache(tmp_path / "cache", builder=builder)
    resolved = resolved_image(tmp_path, sha256="", recipe=recipe)
    path = cache.fetch(resolved, build=True, progress=False)
    assert path.name == "toy-0.01.local.sif" and path == cache.path_for(resolved)
    record = cache.provenance(path)
    assert record["origin"] == "built-locally"
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["recipe"] == str(recipe)
    assert record["recipe_sha256"] == hashlib.sha256(recipe.read_bytes()).hexdigest()
    assert cache.is_cached(resolved)
    # Cached now: reused without build=True and without building again.
    assert cache.fetch(resolved, progress=False) == path
    assert builder.calls == 1
    assert [r.ok for r in cache.verify()] == [True]


def test_a_build_gets_the_configs_wheelhouse_then_the_catalogs(tmp_path, recipe):
    builder = TinyBuilder()
    cache = ImageCache(tmp_path / "cache", builder=builder,
                       pip_sources=PipSources((Path("/config/wheels"),), offline=True))
    resolved = replace(resolved_image(tmp_path, sha256="", recipe=recipe),
                       wheelhouse=(Path("/catalog/wheels"), Path("/config/wheels")))
    cache.fetch(resolved, build=True, progress=False)
    assert builder.sources == [PipSources((Path("/config/wheels"), Path("/catalog/wheels")),
                                          offline=True)]


def test_build_when_no_source_is_reachable(tmp_path, recipe):
    builder = TinyBuilder()
    cache = ImageCache(tmp_path / "cache", builder=builder)
    resolved = resolved_image(tmp_path, str(tmp_path / "missing.sif"), recipe=recipe)
    path = cache.fetch(resolved, build=True, progress=False)
    assert path.name == "toy-0.01.local.sif"
    assert cache.provenance(path)["catalog_sha256"] == DIGEST
    assert not cache.is_cached(resolved)  # the published image is still missing
    assert cache.cached_path(resolved) == path
    with pytest.raises(DownloadError, match=r"a locally built image exists "
                                            r"\(toy-0\.01\.local\.sif\): --build uses it"):
        cache.fetch(resolved, progress=False)
    assert cache.fetch(resolved, build=True, progress=False) == path
    assert builder.calls == 1


def test_builder_misreporting_its_digest_is_refused(tmp_path, recipe):
    cache = ImageCache(tmp_path / "cache", builder=TinyBuilder(report="f" * 64))
    with pytest.raises(BuildError, match=r"reported sha256 f{64} .* but the file hashes to"):
        cache.fetch(resolved_image(tmp_path, sha256="", recipe=recipe), build=True)
    assert cache_files(cache) == []


def test_builder_writing_nothing_is_an_error(tmp_path, recipe):
    cache = ImageCache(tmp_path / "cache", builder=TinyBuilder(write=False))
    with pytest.raises(BuildError, match="finished but wrote no image"):
        cache.fetch(resolved_image(tmp_path, sha256="", recipe=recipe), build=True)


def test_missing_recipe_is_named(tmp_path):
    resolved = resolved_image(tmp_path, sha256="", recipe=tmp_path / "recipes" / "nope.def")
    with pytest.raises(BuildError, match=r"recipe .*nope\.def .* does not exist"):
        ImageCache(tmp_path / "cache", builder=TinyBuilder()).fetch(resolved, build=True)


def test_provenance_of_an_unknown_file_is_an_error(tmp_path):
    with pytest.raises(ImageNotFound, match="no provenance record"):
        ImageCache(tmp_path).provenance(tmp_path / "x.sif")


def test_records_are_json(tmp_path, source):
    cache = ImageCache(tmp_path / "cache")
    path = cache.fetch(resolved_image(tmp_path, str(source)), progress=False)
    data = json.loads(Path(f"{path}.json").read_text())
    assert set(data) == {"image", "origin", "sha256", "fetched_at"}


def test_default_builder_reaches_the_real_builder(tmp_path):
    # A recipe the builder rejects before doing any work: proves the call and its arguments fit.
    recipe = tmp_path / "scratch.def"
    recipe.write_text("Bootstrap: scratch\n")
    with pytest.raises(RecipeError, match=r"scratch\.def:1: Bootstrap: scratch is not supported"):
        default_builder(recipe, tmp_path / "out.sif", False)
    assert not (tmp_path / "out.sif").exists()


def test_a_build_that_reproduces_the_pin_is_the_pinned_image(tmp_path, recipe):
    pinned = hashlib.sha256(b"built:" + recipe.read_bytes()).hexdigest()
    cache = ImageCache(tmp_path / "cache", builder=TinyBuilder())
    resolved = resolved_image(tmp_path, sha256=pinned, recipe=recipe)
    path = cache.fetch(resolved, build=True)
    assert path == cache.path_for(resolved) == tmp_path / "cache" / "toy-0.01.sif"
    record = cache.provenance(path)
    assert (record["origin"], record["sha256"], record["reproduces_pin"]) == (
        "built-locally", pinned, True)
    assert cache.is_cached(resolved)


def test_a_build_that_does_not_reproduce_the_pin_keeps_its_own_digest(tmp_path, recipe, caplog):
    cache = ImageCache(tmp_path / "cache", builder=TinyBuilder())
    resolved = resolved_image(tmp_path, recipe=recipe)  # pins DIGEST, which no build gives
    path = cache.fetch(resolved, build=True)
    assert path == cache.local_build_path(resolved) != cache.path_for(resolved)
    record = cache.provenance(path)
    assert record["origin"] == "built-locally" and record["reproduces_pin"] is False
    assert record["sha256"] != DIGEST and record["catalog_sha256"] == DIGEST
    assert not cache.is_cached(resolved)  # never taken for the pinned one
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert f"not the catalog's pinned {DIGEST[:16]}" in warning
    assert "recorded as built-locally with its own digest" in warning
    assert "build --verify Luby@exp:0.01" in warning
