#!/usr/bin/env bash
# Run the whole test suite (installs what it needs first; see scripts/install-deps.sh).
#   bash scripts/test.sh [pytest args]      e.g. bash scripts/test.sh -m integration
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
# Bytecode once, as a regular install writes it: where PYTHONDONTWRITEBYTECODE is set, every
# server, worker and CLI process the tests start would compile the package again.
.venv/bin/python -m compileall -q dacbench_remote > /dev/null
exec .venv/bin/python -m pytest -ra --durations=15 "$@"  # the slowest, to keep CI under 30 min
