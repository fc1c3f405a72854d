"""A step's fingerprint: what decides its outputs. A step whose fingerprint matches its recorded
outputs is not run again (as ClearML caches steps): its kind, its parameters with references
resolved, the images it runs (sha256), the runtime settings that reach inside the container,
and the outputs of every step it needs. Time limits and the executor are left out: where and
how long a step may run does not change what it finds."""

from __future__ import annotations

import hashlib

from ..sweeps.trial import canonical_json

FINGERPRINT_VERSION = 1


def fingerprint(kind: str, params: dict, images: list[dict], runtime, inputs: dict) -> str:
    document = {
        "v": FINGERPRINT_VERSION,
        "kind": kind,
        "params": params,
        "images": images,
        "runtime": {"kind": runtime.kind, "image": runtime.image, "python": runtime.python,
                    "binds": list(runtime.binds), "env": runtime.env, "gpu": runtime.gpu},
        "inputs": inputs,
    }
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()
