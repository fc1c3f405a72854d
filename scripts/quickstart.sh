#!/usr/bin/env bash
# Quick start: install what is missing, build the base image once (cached), then run
# FunctionApproximation for 3 episodes inside it, rootless through bubblewrap, and print results.
#   bash scripts/quickstart.sh [extra `dacbench-remote run` options, e.g. --episodes 5 --seed 1]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
exec .venv/bin/dacbench-remote run FunctionApproximation --runtime bwrap --build --episodes 3 "$@"
