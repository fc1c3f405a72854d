#!/usr/bin/env bash
# Install what dacbench-remote needs on Debian/Ubuntu: system tools, then a project venv (.venv).
#
#   bash scripts/install-deps.sh          # runtime: bubblewrap, squashfs tools, image builder
#   bash scripts/install-deps.sh --dacbench  # + DACBench 0.5.6 on the host (benchmark objects)
#   bash scripts/install-deps.sh --test   # + what the test suite needs (Slurm, DACBench to compare,
#                                         #   Optuna, Stable-Baselines3 in .venv/sb3, SMAC3 in .venv/smac,
#                                         #   torch's CPU wheel in the agent image's wheelhouse)
#
# Idempotent and quick when everything is there. Uses the system's configured apt and pip
# mirrors. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
want_dacbench=0
[ "${1:-}" = "--test" ] && want_tests=1 && want_dacbench=1
[ "${1:-}" = "--dacbench" ] && want_dacbench=1

apt_packages=(python3 python3-venv bubblewrap squashfs-tools squashfuse fuse3 siftool mmdebstrap
              uidmap ca-certificates)
[ "$want_tests" = 1 ] && apt_packages+=(slurm-wlm munge util-linux passwd procps mount
                                         docker-registry apache2-utils openssl)

missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing system packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
extras="slurm"
[ "$want_tests" = 1 ] && extras="slurm,test,tune,report"
"${pip[@]}" -e ".[$extras]"
if [ "$want_tests" = 1 ]; then
  # Stable-Baselines3, for the tests of the SB3 adapter (dacbench_remote.host.sb3; SB3 is no
  # dependency of the package), in a venv of its own with this package: .venv/sb3. Not in .venv:
  # DACBench there (installed without its dependencies) imports its SGD benchmark, which needs
  # torchvision, as soon as torch is importable. The CPU build of torch avoids gigabytes of
  # CUDA wheels where a mirror offers it; elsewhere pip takes the default build.
  [ -x .venv/sb3/bin/python ] || "$python" -m venv .venv/sb3
  sb3_pip=(.venv/sb3/bin/python -m pip install -q --disable-pip-version-check -e . pytest)
  if ! "${sb3_pip[@]}" "torch==2.13.0+cpu" stable-baselines3 2>/dev/null; then
    echo "no CPU build of torch 2.13.0 offered here; installing stable-baselines3 with the default torch" >&2
    "${sb3_pip[@]}" stable-baselines3
  fi
  # The wheelhouse the agent image (recipes/agent-sb3.def) is built from in the tests: torch's
  # CPU build, which the default package index does not have. pip copies it from wherever this
  # machine's pip finds it (a find-links directory, or PyTorch's CPU index if configured).
  wheelhouse=${DACBENCH_REMOTE_TEST_WHEELHOUSE:-/var/tmp/dacbench-remote-tests/wheelhouse}
  mkdir -p "$wheelhouse"
  if ! .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps \
      "torch==2.13.0+cpu" -d "$wheelhouse" 2>/dev/null; then
    echo "torch 2.13.0+cpu is not offered here: the agent image's tests will fail until" \
         "$wheelhouse holds its wheel (pip download --no-deps torch==2.13.0+cpu -d $wheelhouse)" >&2
  fi
fi
if [ "$want_tests" = 1 ]; then
  # SMAC3, for the test of the tune step's SMAC optimizer, in a venv of its own with this
  # package: .venv/smac. Not in .venv: with smac importable, DACBench 0.5.6 imports its DACBO
  # env, which needs omegaconf, torch and more that the light install leaves out.
  [ -x .venv/smac/bin/python ] || "$python" -m venv .venv/smac
  .venv/smac/bin/python -m pip install -q --disable-pip-version-check -e ".[tune]" pytest smac
fi
if [ "$want_dacbench" = 1 ]; then
  # DACBench 0.5.6 on the host, to write benchmark objects (and, for the tests, to compare
  # in-process). Its declared dependencies pull in heavy stacks; these are the ones its light
  # benchmarks import.
  # Installed last and without dependencies, so pip does not report the ones we leave out.
  "${pip[@]}" -r tests/requirements-dacbench.txt
  "${pip[@]}" --no-deps dacbench==0.5.6
fi
echo "dependencies ready: .venv/bin/dacbench-remote" >&2
