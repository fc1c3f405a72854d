"""How returns become one number (the tune objective) and how policies are compared (means
with bootstrap confidence intervals over seeds)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

AGGREGATES = ("mean", "median", "min", "max")


def aggregate(values: Sequence[float], how: str = "mean") -> float:
    """The objective of a candidate: `how` of all its episode returns."""
    if how == "mean":
        return statistics.fmean(values)
    if how == "median":
        return float(statistics.median(values))
    if how == "min":
        return float(min(values))
    if how == "max":
        return float(max(values))
    raise ValueError(f"unknown aggregate {how!r}")


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval for the mean of `values` (one per seed), repeatable."""
    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        return float(data.mean()), float(data.mean())
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))
