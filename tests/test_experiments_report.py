"""The report's data and figures from result files written here: panels per step, series per
policy, means per instance and bootstrap intervals computed independently."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from dacbench_remote.experiments.containers import write_results
from dacbench_remote.experiments.report_step import build_figures, report_data, write_report
from tests.needs import need_module


def evaluation(path: Path, policies: dict[str, list[list[float]]], instances: bool) -> dict:
    """results.csv of an evaluate step: policy -> per seed, the episodes' returns."""
    rows = []
    for policy, seeds in policies.items():
        for seed, returns in enumerate(seeds):
            for episode, value in enumerate(returns):
                rows.append({"policy": policy, "seed": seed, "episode": episode,
                             "return": value,
                             "instance": episode % 2 if instances and policy != "no-ids" else None})
    write_results(path, rows)
    return {"kind": "evaluate", "results": str(path)}


def tune(directory: Path, values: list[float]) -> dict:
    history = directory / "history.jsonl"
    history.write_text("".join(json.dumps({"event": "told", "number": i, "params": {"a": i},
                                           "value": v}) + "\n" for i, v in enumerate(values)))
    return {"kind": "tune", "history": str(history), "direction": "maximize", "trials":
            len(values), "best_value": max(values), "best": {"a": values.index(max(values))},
            "best_agent": "static:0"}


def test_report_data_and_figures_have_a_panel_per_step_and_a_series_per_policy(tmp_path):
    need_module("matplotlib")  # in the test extra: missing, the test fails, named
    inputs = {
        "tune_a": tune(tmp_path, [1.0, 3.0, 2.0]),
        "eval_a": evaluation(tmp_path / "a.csv", {"good": [[1, 3], [2, 4], [3, 5]],
                                                  "bad": [[0, 0], [1, 1], [0, 2]],
                                                  "no-ids": [[5, 5], [5, 5], [5, 5]]}, True),
        "eval_b": evaluation(tmp_path / "b.csv", {"only": [[1.5], [2.5]]}, False),
    }
    data = report_data(inputs, confidence=0.9, resamples=500)
    assert data["histories"] == {"tune_a": [(0, 1.0), (1, 3.0), (2, 2.0)]}
    ranked = {name: rest for name, *rest in data["rankings"]["eval_a"]}
    assert [r[0] for r in data["rankings"]["eval_a"]] == ["no-ids", "good", "bad"]
    assert ranked["good"][0] == statistics.fmean([1, 3, 2, 4, 3, 5])
    seed_means = np.array([2.0, 3.0, 4.0])  # the bootstrap, by hand
    draws = seed_means[np.random.default_rng(0).integers(0, 3, size=(500, 3))].mean(axis=1)
    assert ranked["good"][1:3] == [pytest.approx(np.quantile(draws, 0.05)),
                                   pytest.approx(np.quantile(draws, 0.95))]
    assert data["instances"] == {"eval_a": {"good": {"0": 2.0, "1": 4.0},
                                            "bad": {"0": 1 / 3, "1": 1.0}}}

    figures = build_figures(data, confidence=0.9)
    assert [len(figures[name].axes) for name in ("history", "distributions", "ranking",
                                                 "instances")] == [1, 2, 2, 1]
    history = figures["history"].axes[0]
    assert len(history.lines) == 2
    assert list(history.lines[1].get_ydata()) == [1.0, 3.0, 3.0]  # best so far
    ranking_a, ranking_b = figures["ranking"].axes
    assert (len(ranking_a.containers), len(ranking_b.containers)) == (3, 1)
    assert [len(ax.get_xticklabels()) for ax in figures["distributions"].axes] == [3, 1]
    [instances] = figures["instances"].axes
    assert [line.get_label() for line in instances.lines] == ["good", "bad"]

    outputs = write_report(tmp_path / "report", {}, inputs, "demo", "run-1")
    assert set(outputs["figures"]) == {"history", "distributions", "ranking", "instances"}
    markdown = Path(outputs["markdown"]).read_text()
    assert "| 1 | no-ids | 5 |" in markdown and "## Evaluation: eval_b" in markdown
