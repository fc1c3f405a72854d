#!/usr/bin/env bash
# Quick start: install what is missing (system tools, a .venv with dacbench-remote and DACBench
# for writing benchmark objects), then run scripts/quickstart.py: a configured DACBench benchmark
# in its experiment's image, rootless. The first run builds the image once (~1.5 min, cached).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --dacbench
exec .venv/bin/python scripts/quickstart.py "$@"
