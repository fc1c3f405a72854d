"""Pin the packaged catalog: build each unpublished version from its recipe, record sha256 + inputs.

    python scripts/pin_catalog.py [--family dacbench-base] [--wheelhouse DIR] [--dry-run]

Run as root from the repository root after the last change to `dacbench_remote/` (the images
copy it in, so it is part of every version's inputs). Only versions without sources are
(re)pinned: a published image's digest is never changed. The test suite checks that the pins
are current (tests/integration/test_packaged_pins.py); this script is how to make them so.

The agent family (agent-sb3) takes torch's CPU wheel from a wheelhouse: by default the tests'
(/var/tmp/dacbench-remote-tests/wheelhouse, which `scripts/install-deps.sh --test` fills), so
the pin is what the suite builds. The wheels an image holds are recorded in its manifest, so
pin from a wheelhouse holding only the wheels the index lacks, as the tests' does.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dacbench_remote.images.build import build_image  # noqa: E402
from dacbench_remote.images.catalog import parse_catalog_file  # noqa: E402
from dacbench_remote.images.catalog_edit import write_pin  # noqa: E402
from dacbench_remote.images.manifest import MANIFEST_NAME  # noqa: E402
from dacbench_remote.images.sif import SifImage  # noqa: E402

# Families the suite builds; dacbench-sgd needs torch and torchvision, which cannot be had here.
DEFAULT_FAMILIES = ("dacbench-base", "dacbench-cmaes", "dacbench-theory", "agent-sb3")
TEST_WHEELHOUSE = Path(os.environ.get("DACBENCH_REMOTE_TEST_WHEELHOUSE")
                       or "/var/tmp/dacbench-remote-tests/wheelhouse")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", action="append", help="only these families (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="build and print, write nothing")
    parser.add_argument("--wheelhouse", action="append", type=Path, default=[],
                        help="wheel directory for the builds (repeatable; default: the tests' "
                        f"wheelhouse {TEST_WHEELHOUSE} where it exists)")
    args = parser.parse_args()
    families = tuple(args.family or DEFAULT_FAMILIES)
    if not args.wheelhouse and TEST_WHEELHOUSE.is_dir():
        args.wheelhouse = [TEST_WHEELHOUSE]
    for file in sorted((REPO / "benchmarks").glob("*.toml")):
        family = parse_catalog_file(file)
        if family.name not in families:
            continue
        for version in family.versions:
            if version.sources:
                print(f"{family.name} {version.experiment}: published, left as it is")
                continue
            recipe = version.recipe or family.recipe
            # Only the agent images take wheels the index lacks; the benchmark images are
            # pinned as the suite builds them, without a wheelhouse.
            wheelhouse = [*args.wheelhouse, *version.wheelhouse, *family.wheelhouse] \
                if family.kind == "agent" else [*version.wheelhouse, *family.wheelhouse]
            with tempfile.TemporaryDirectory(prefix="pin-", dir="/var/tmp") as tmp:
                result = build_image(recipe, Path(tmp) / version.image, context=REPO,
                                     builder="native", workdir=Path(tmp), wheelhouse=wheelhouse,
                                     progress=lambda m: print("  " + m, file=sys.stderr))
                manifest = SifImage.open(result.path).json_object(MANIFEST_NAME) or {}
            inputs = manifest["inputs_sha256"]
            changed = (result.sha256, inputs) != (version.sha256, version.inputs)
            print(f"{family.name} {version.experiment}: sha256 {result.sha256}, inputs {inputs}"
                  f" ({'changed' if changed else 'unchanged'}, {result.size / 1e6:.0f} MB, "
                  f"{result.seconds:.0f} s)")
            if changed and not args.dry_run:
                write_pin(file, version.experiment, result.sha256, inputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
