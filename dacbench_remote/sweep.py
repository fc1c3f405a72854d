"""Alias of `dacbench_remote.sweeps`, the public API of sweeps: `from dacbench_remote.sweeps import
run_sweep` keeps working and gives the same objects."""

from __future__ import annotations

from .sweeps import *  # noqa: F403
from .sweeps import __all__  # noqa: F401
