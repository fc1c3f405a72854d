"""The tune step's Optuna optimiser with each sampler (TPE, CMA-ES, random, grid) on a typed
space (int, float, log-float, categorical): candidates of the right types inside the space, the
best as Optuna's own study reads it from the journal, and resume (told kept, asked-not-told
handed back)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest

from dacbench_remote.experiments.optimizers import JOURNAL, make_optimizer
from dacbench_remote.experiments.space import Parameter, full_grid
from tests.needs import need_module

SPACE = [Parameter("n", "int", 1, 8), Parameter("x", "float", -1.0, 1.0),
         Parameter("lr", "float", 1e-4, 1e-1, log=True),
         Parameter("c", "categorical", choices=("a", "b", "c"))]
GRID_SPACE = [Parameter("n", "int", 0, 3), Parameter("c", "categorical", choices=("a", "b"))]


def objective(params: dict) -> float:
    """Known in closed form: best at n=5, x=0.25, lr=1e-2, c="b"."""
    value = -(params["n"] - 5) ** 2 - (params.get("x", 0.25) - 0.25) ** 2
    value -= (math.log10(params.get("lr", 1e-2)) + 2) ** 2
    return value + (1.0 if params["c"] == "b" else 0.0)


def inside(params: dict, space: list[Parameter]) -> bool:
    for p in space:
        value = params[p.name]
        if p.type == "categorical":
            ok = value in p.choices
        elif p.type == "int":
            ok = isinstance(value, int) and p.low <= value <= p.high
        else:
            ok = isinstance(value, float) and p.low <= value <= p.high
        if not ok:
            return False
    return True


@pytest.mark.parametrize("sampler", ["tpe", "cmaes", "random", "grid"])
def test_each_sampler_asks_typed_candidates_and_resumes_from_its_journal(tmp_path: Path,
                                                                        sampler: str):
    optuna = need_module("optuna")
    need_module("cmaes")
    space = GRID_SPACE if sampler == "grid" else SPACE
    count = len(full_grid(space)) if sampler == "grid" else 12

    def open_optimizer():
        return make_optimizer("optuna", sampler, tmp_path, space, maximize=True, seed=0,
                              study_name="tune")

    told = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CMA-ES: categorical parameters are sampled apart
        optimizer = open_optimizer()
        for _ in range(count - 1):
            candidate = optimizer.ask()
            assert inside(candidate.params, space), candidate
            optimizer.tell(candidate, objective(candidate.params))
            told.append(candidate.params)
        unfinished = optimizer.ask()  # the driver dies before telling it

        resumed = open_optimizer()
        assert resumed.told() == count - 1
        assert [c.number for c in resumed.pending()] == [unfinished.number]
        assert resumed.pending()[0].params == unfinished.params
        resumed.tell(resumed.pending()[0], objective(unfinished.params))
        told.append(unfinished.params)
        assert resumed.ask().number == count  # numbering goes on
    if sampler == "grid":  # every point once
        assert sorted(map(sorted, (p.items() for p in told))) == \
            sorted(map(sorted, (p.items() for p in full_grid(space))))
    # The best as Optuna itself reads the journal, and as the objective says.
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / JOURNAL)))
    study = optuna.load_study(study_name="tune", storage=storage)
    best_params, best_value = resumed.best()
    assert best_value == study.best_value == max(objective(p) for p in told)
    assert best_params == study.best_params
