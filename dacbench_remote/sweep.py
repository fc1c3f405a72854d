"""Alias of `dacbench_remote.sweeps`, the public API of sweeps, kept for code that imports from
here (`from dacbench_remote.sweep import run_sweep`): the same names, the same objects."""

from __future__ import annotations

from .sweeps import *  # noqa: F403
from .sweeps import __all__  # noqa: F401
