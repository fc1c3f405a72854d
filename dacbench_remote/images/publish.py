"""Publishing a SIF to an OCI registry as `apptainer push` does, streamed in chunks, then cataloging it.

A multi-GB image is never held in memory: the blob goes up in PATCH requests of `chunk_size`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .._sys.files import sha256_file
from ..errors import RegistryError
from . import catalog_edit
from .credentials import Credentials
from .download import Progress
from .registry import (
    CONFIG_TYPE,
    LAYER_TYPE,
    MANIFEST_TYPE,
    TITLE,
    Reference,
    RegistryClient,
    parse_reference,
)
from .sif import SifImage

CHUNK_SIZE = 8 << 20
CONFIG_BLOB = b"{}"  # what Apptainer writes as the config of a SIF
FAMILY_LABEL = "org.dacbench-remote.family"
BENCHMARKS_LABEL = "org.dacbench-remote.benchmarks"
DACBENCH_LABEL = "org.dacbench-remote.dacbench-version"


@dataclass(frozen=True)
class Pushed:
    """What a push left in the registry: the SIF's sha256, its size, the manifest's digest."""

    reference: Reference
    sha256: str
    size: int
    manifest_digest: str
    uploaded: bool  # False when the registry already had the blob


def manifest_for(sif_digest: str, size: int, title: str) -> bytes:
    """The manifest `apptainer push` writes: `{}` config, one SIF layer titled with the name."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "size": len(CONFIG_BLOB),
                   "digest": "sha256:" + hashlib.sha256(CONFIG_BLOB).hexdigest()},
        "layers": [{"mediaType": LAYER_TYPE, "size": size, "digest": sif_digest,
                    "annotations": {TITLE: title}}],
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def read_chunks(path: Path, chunk_size: int) -> Iterator[bytes]:
    """The file in pieces of at most `chunk_size` bytes (the only reads of a pushed image)."""
    with path.open("rb") as handle:
        while block := handle.read(chunk_size):
            yield block


def push_sif(image: Path, uri: str, *, credentials: Credentials | None = None,
             insecure: bool = False, chunk_size: int = CHUNK_SIZE, progress: bool = True,
             sha256: str | None = None) -> Pushed:
    """Push a SIF file to `oras://REGISTRY/REPO:TAG`: blob (unless present), `{}` config, manifest.

    `sha256` saves hashing the file again when the caller knows it already.
    """
    ref = parse_reference(uri)
    if ref.digest:
        raise RegistryError(f"{uri}: publish to a tag (oras://REGISTRY/REPO:TAG); the registry "
                            "gives the manifest its digest")
    client = RegistryClient(ref, credentials=credentials, insecure=insecure)
    size = image.stat().st_size
    digest = "sha256:" + (sha256 or sha256_file(image))
    uploaded = not _has_blob(client, digest)
    if uploaded:
        _upload(client, digest, read_chunks(image, chunk_size),
                Progress(f"pushing {image.name}", size, enabled=progress))
    config_digest = "sha256:" + hashlib.sha256(CONFIG_BLOB).hexdigest()
    if not _has_blob(client, config_digest):
        _upload(client, config_digest, iter([CONFIG_BLOB]), Progress("", 2, enabled=False))
    manifest = manifest_for(digest, size, image.name)
    response = client.request("PUT", f"manifests/{ref.tag}", data=manifest,
                              headers={"Content-Type": MANIFEST_TYPE})
    if response.status_code not in (200, 201):
        raise client.fail(response, "pushing the manifest")
    manifest_digest = response.headers.get("Docker-Content-Digest") or \
        "sha256:" + hashlib.sha256(manifest).hexdigest()
    return Pushed(ref, digest.removeprefix("sha256:"), size, manifest_digest, uploaded)


def _has_blob(client: RegistryClient, digest: str) -> bool:
    response = client.request("HEAD", f"blobs/{digest}")
    if response.status_code in (200, 404):
        return response.status_code == 200
    raise client.fail(response, "checking for the blob")


def _upload(client: RegistryClient, digest: str, chunks: Iterator[bytes], bar: Progress) -> None:
    """POST an upload session, PATCH each chunk with its Content-Range, PUT ?digest= to finish."""
    response = client.request("POST", "blobs/uploads/")
    if response.status_code != 202 or "Location" not in response.headers:
        raise client.fail(response, "starting an upload")
    location, done = client.url(response.headers["Location"]), 0
    for chunk in chunks:
        response = client.request("PATCH", location, data=chunk, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{done}-{done + len(chunk) - 1}",
            "Content-Length": str(len(chunk))})
        if response.status_code != 202:
            raise client.fail(response, f"uploading bytes {done}-{done + len(chunk) - 1}")
        location = client.url(response.headers.get("Location", location))
        done += len(chunk)
        bar.update(done)
    bar.close(done)
    separator = "&" if "?" in location else "?"
    response = client.request("PUT", f"{location}{separator}digest={digest}",
                              headers={"Content-Length": "0"})
    if response.status_code != 201:
        raise client.fail(response, "finishing the upload")


def publish(image: Path, uri: str, *, experiment: str | None = None,
            catalog: Path | None = None, credentials: Credentials | None = None,
            insecure: bool = False, chunk_size: int = CHUNK_SIZE,
            progress: bool = True) -> Pushed:
    """Push `image`, then (with a catalog) record it under `experiment` with `uri` as a source.

    The catalog is checked before anything is pushed, so a digest conflict costs no upload.
    """
    if (experiment is None) != (catalog is None):
        raise RegistryError("--experiment and --catalog go together: name the experiment id "
                            "and the catalog file to record the published image in")
    labels = SifImage.open(image).labels()  # also refuses a file that is not a SIF
    digest = sha256_file(image)
    if catalog is not None and experiment is not None:
        catalog_edit.check_publishable(catalog, experiment, digest)
    pushed = push_sif(image, uri, credentials=credentials, insecure=insecure,
                      chunk_size=chunk_size, progress=progress, sha256=digest)
    if catalog is not None and experiment is not None:
        record(catalog, experiment, image.name, pushed.sha256, uri, labels)
    return pushed


def record(catalog: Path, experiment: str, image_name: str, sha256: str, source: str,
           labels: dict) -> None:
    """Write or update the catalog entry: a new file, a new version, or a source added."""
    if not catalog.exists():
        benchmarks = [b.strip() for b in str(labels.get(BENCHMARKS_LABEL, "")).split(",")
                      if b.strip()]
        text = catalog_edit.new_catalog_text(str(labels.get(FAMILY_LABEL, "")), benchmarks)
        catalog.parent.mkdir(parents=True, exist_ok=True)
        catalog.write_text(text, encoding="utf-8")
    family = catalog_edit.check_publishable(catalog, experiment, sha256)
    if family is not None and any(v.experiment == experiment for v in family.versions):
        catalog_edit.add_source(catalog, experiment, source, sha256)
    else:
        catalog_edit.add_version(catalog, experiment, image_name, sha256, [source],
                                 dacbench=str(labels.get(DACBENCH_LABEL, "")))
