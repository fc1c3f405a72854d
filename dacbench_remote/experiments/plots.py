"""The report's figures, built as matplotlib Figures (tests count their panels and series) and
saved as PNG: optimisation history, return distributions per policy, per-instance comparison,
and a ranking with confidence intervals. One panel per tune or evaluate step."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._sys.files import atomic_output


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(count: int, width: float = 5.0, height: float = 3.6):
    plt = _pyplot()
    columns = min(count, 3)
    lines = math.ceil(count / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(width * columns, height * lines),
                                squeeze=False)
    for ax in list(axes.flat)[count:]:
        figure.delaxes(ax)
    return figure, list(axes.flat)[:count]


def history_figure(histories: dict[str, Sequence[tuple[int, float]]], maximize: dict[str, bool]):
    """Per tune step: each trial's objective (points) and the best so far (a step line)."""
    figure, axes = _panels(len(histories))
    for ax, (step, points) in zip(axes, histories.items(), strict=True):
        numbers = [n for n, _ in points]
        values = [v for _, v in points]
        best, running = [], None
        for value in values:
            better = running is None or (value > running if maximize[step] else value < running)
            running = value if better else running
            best.append(running)
        ax.plot(numbers, values, "o", markersize=4, alpha=0.7, label="trial")
        ax.step(numbers, best, where="post", label="best so far")
        ax.set_title(f"{step}: optimisation history", fontsize=9)
        ax.set_xlabel("trial")
        ax.set_ylabel("objective")
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def distribution_figure(returns: dict[str, dict[str, Sequence[float]]]):
    """Per evaluate step: a box per policy of its episode returns."""
    figure, axes = _panels(len(returns))
    for ax, (step, policies) in zip(axes, returns.items(), strict=True):
        names = list(policies)
        ax.boxplot([list(policies[n]) for n in names], showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=20, fontsize=8)
        ax.set_title(f"{step}: returns per policy", fontsize=9)
        ax.set_ylabel("return")
    figure.tight_layout()
    return figure


def instance_figure(means: dict[str, dict[str, dict[str, float]]]):
    """Per evaluate step: mean return per instance, one line per policy."""
    figure, axes = _panels(len(means), width=6.0)
    for ax, (step, policies) in zip(axes, means.items(), strict=True):
        instances = sorted({i for per in policies.values() for i in per}, key=_natural)
        positions = range(len(instances))
        for name, per in policies.items():
            ax.plot(positions, [per.get(i, math.nan) for i in instances], marker="o",
                    markersize=3, label=name)
        ax.set_xticks(list(positions), instances, fontsize=7,
                      rotation=90 if len(instances) > 12 else 0)
        ax.set_title(f"{step}: mean return per instance", fontsize=9)
        ax.set_xlabel("instance")
        ax.set_ylabel("mean return")
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def ranking_figure(rankings: dict[str, Sequence[tuple[str, float, float, float]]],
                   confidence: float):
    """Per evaluate step: each policy's mean return with its confidence interval, best on top."""
    figure, axes = _panels(len(rankings))
    for ax, (step, ranked) in zip(axes, rankings.items(), strict=True):
        for position, (name, mean, low, high) in enumerate(reversed(ranked)):
            # max(0, ...): a bootstrap interval of equal means may miss the mean by a rounding
            ax.errorbar([mean], [position], xerr=[[max(0.0, mean - low)], [max(0.0, high - mean)]],
                        fmt="o",
                        capsize=4, label=name)
        ax.set_yticks(range(len(ranked)), [r[0] for r in reversed(ranked)], fontsize=8)
        ax.set_title(f"{step}: ranking ({confidence:.0%} CI over seeds)", fontsize=9)
        ax.set_xlabel("mean return")
    figure.tight_layout()
    return figure


def save(figure, path) -> None:
    """Write the figure as a PNG (atomically) and release it."""
    plt = _pyplot()
    with atomic_output(path, durable=False, perms=0o666) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)


def _natural(value: str):
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)
