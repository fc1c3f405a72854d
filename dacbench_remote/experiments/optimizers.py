"""Ask/tell optimisers for the tune step, behind one small interface: Optuna (the default: TPE,
CMA-ES, random or grid search, its study in a journal file) and SMAC3.

Both resume: a driver that was killed finds every finished trial kept, and the trials it had
asked for but not told are handed back (`pending`) to be evaluated and told, not asked anew.
Optuna keeps that in its JournalStorage (file locks; several processes, on several machines
over a shared filesystem, can work on one study). SMAC keeps no such store, so the step's own
history (history.jsonl, one line per ask and tell) is replayed into it.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadConfig
from ..host.results import append_record
from ..sweeps.sweepdir import read_jsonl
from .space import Parameter, full_grid

OPTIMIZERS = ("optuna", "smac")
SAMPLERS = ("tpe", "cmaes", "random", "grid")
HISTORY = "history.jsonl"
JOURNAL = "study.journal"


@dataclass
class Candidate:
    """One trial of the optimiser: its number and parameter values."""

    number: int
    params: dict


class Optimizer(ABC):
    """Ask for candidates, tell their objective values; resumable from its directory."""

    def __init__(self, directory: Path, space: list[Parameter], maximize: bool):
        self.directory, self.space, self.maximize = directory, space, maximize
        self.history = directory / HISTORY

    @abstractmethod
    def pending(self) -> list[Candidate]:
        """Asked and never told (a driver died meanwhile): evaluate these before asking."""

    @abstractmethod
    def told(self) -> int:
        """How many trials are finished (told a value, or told failed)."""

    @abstractmethod
    def ask(self) -> Candidate: ...

    @abstractmethod
    def tell(self, candidate: Candidate, value: float | None) -> None:
        """The candidate's objective value; None when its evaluation failed."""

    def best(self) -> tuple[dict, float] | None:
        """The best finished candidate's parameters and value, from the history."""
        values = [(r["params"], r["value"]) for r in self.records() if r.get("event") == "told"
                  and r.get("value") is not None]
        if not values:
            return None
        pick = max if self.maximize else min
        return pick(values, key=lambda item: item[1])

    def records(self) -> list[dict]:
        return read_jsonl(self.history)

    def _note(self, event: str, candidate: Candidate, value: float | None = None) -> None:
        record = {"event": event, "number": candidate.number, "params": candidate.params}
        if event == "told":
            record["value"] = value
        append_record(self.history, record)


def make_optimizer(name: str, sampler: str, directory: Path, space: list[Parameter],
                   maximize: bool, seed: int, study_name: str) -> Optimizer:
    """The optimiser `name` ("optuna" or "smac"); RuntimeUnavailable-like BadConfig when its
    package is not installed, naming the extra to install."""
    directory.mkdir(parents=True, exist_ok=True)
    if name == "optuna":
        return OptunaOptimizer(directory, space, maximize, sampler, seed, study_name)
    if name == "smac":
        return SmacOptimizer(directory, space, maximize, seed)
    raise BadConfig(f"optimizer {name!r} is not known; use one of {', '.join(OPTIMIZERS)}")


class OptunaOptimizer(Optimizer):
    """An Optuna study in `DIR/study.journal` (JournalStorage with a file backend)."""

    def __init__(self, directory: Path, space: list[Parameter], maximize: bool, sampler: str,
                 seed: int, study_name: str):
        super().__init__(directory, space, maximize)
        try:
            import optuna
        except ImportError as exc:
            raise BadConfig("the tune step's optimizer 'optuna' is not installed: pip install "
                            "'dacbench-remote[tune]'") from exc
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        backend = optuna.storages.journal.JournalFileBackend(str(directory / JOURNAL))
        storage = optuna.storages.JournalStorage(backend)
        self.distributions = {p.name: _optuna_distribution(optuna, p) for p in space}
        existing = 0
        with contextlib.suppress(KeyError):
            existing = len(optuna.load_study(study_name=study_name, storage=storage).trials)
        self.study = optuna.create_study(
            study_name=study_name, storage=storage, load_if_exists=True,
            direction="maximize" if maximize else "minimize",
            # A resumed random search must not propose its first candidates again.
            sampler=_sampler(optuna, sampler, space, seed + existing))
        if sampler == "grid" and existing == 0:
            for point in full_grid(space):  # asked in this order; kept in the journal
                self.study.enqueue_trial(point, skip_if_exists=True)

    def _trials(self, *states):
        return self.study.get_trials(deepcopy=False, states=states)

    def pending(self) -> list[Candidate]:
        running = self._trials(self.optuna.trial.TrialState.RUNNING)
        return [Candidate(t.number, dict(t.params)) for t in running]

    def told(self) -> int:
        state = self.optuna.trial.TrialState
        return len(self._trials(state.COMPLETE, state.FAIL, state.PRUNED))

    def ask(self) -> Candidate:
        trial = self.study.ask(self.distributions)
        candidate = Candidate(trial.number, dict(trial.params))
        self._note("asked", candidate)
        return candidate

    def tell(self, candidate: Candidate, value: float | None) -> None:
        if value is None:
            self.study.tell(candidate.number, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(candidate.number, value)
        self._note("told", candidate, value)


def _optuna_distribution(optuna, p: Parameter):
    d = optuna.distributions
    if p.type == "categorical":
        return d.CategoricalDistribution(list(p.choices))
    if p.type == "int":
        return d.IntDistribution(int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return d.FloatDistribution(float(p.low), float(p.high), step=p.step, log=p.log)


def _sampler(optuna, name: str, space: list[Parameter], seed: int):
    samplers = optuna.samplers
    if name == "tpe":
        return samplers.TPESampler(seed=seed)
    if name == "random":
        return samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401  (Optuna's CMA-ES sampler needs it)
        except ImportError as exc:
            raise BadConfig("sampler 'cmaes' needs the cmaes package: pip install "
                            "'dacbench-remote[tune]'") from exc
        return samplers.CmaEsSampler(seed=seed)
    # Grid search: every point is enqueued when the study is made (see OptunaOptimizer);
    # Optuna's GridSampler stops the study from its callback, which ask/tell does not allow.
    return samplers.RandomSampler(seed=seed)


class SmacOptimizer(Optimizer):
    """SMAC3's hyperparameter optimisation facade on a ConfigSpace of the same parameters;
    resumed by replaying history.jsonl into it."""

    def __init__(self, directory: Path, space: list[Parameter], maximize: bool, seed: int):
        super().__init__(directory, space, maximize)
        try:
            import ConfigSpace
            import smac
        except ImportError as exc:
            raise BadConfig("the tune step's optimizer 'smac' is not installed: pip install "
                            "'dacbench-remote[smac]'") from exc
        self.configspace = ConfigSpace.ConfigurationSpace(seed=seed)
        for p in space:
            self.configspace.add(_configspace_parameter(ConfigSpace, p))
        scenario = smac.Scenario(self.configspace, deterministic=True, n_trials=10 ** 6,
                                 output_directory=directory / "smac", seed=seed)
        self.smac = smac.HyperparameterOptimizationFacade(
            scenario, _never_called, overwrite=True, logging_level=logging.WARNING)
        self._infos: dict[int, object] = {}
        self._replay()

    def _replay(self) -> None:
        from smac.runhistory.dataclasses import TrialInfo, TrialValue

        records = self.records()
        told = {r["number"] for r in records if r.get("event") == "told"}
        self._next = 1 + max((r["number"] for r in records), default=-1)
        self._pending = [Candidate(r["number"], r["params"]) for r in records
                         if r.get("event") == "asked" and r["number"] not in told]
        for record in records:
            if record.get("event") == "told" and record.get("value") is not None:
                config = self._configuration(record["params"])
                self.smac.tell(TrialInfo(config, seed=0), TrialValue(cost=self._cost(record["value"])))
        self._told = len(told)

    def _configuration(self, params: dict):
        from ConfigSpace import Configuration

        return Configuration(self.configspace, values=params)

    def _cost(self, value: float) -> float:
        return -value if self.maximize else value  # SMAC minimises

    def pending(self) -> list[Candidate]:
        return list(self._pending)

    def told(self) -> int:
        return self._told

    def ask(self) -> Candidate:
        info = self.smac.ask()
        candidate = Candidate(self._next, _plain(dict(info.config)))
        self._next += 1
        self._infos[candidate.number] = info
        self._note("asked", candidate)
        return candidate

    def tell(self, candidate: Candidate, value: float | None) -> None:
        from smac.runhistory.dataclasses import TrialInfo, TrialValue
        from smac.runhistory.enumerations import StatusType

        info = self._infos.pop(candidate.number, None) or TrialInfo(
            self._configuration(candidate.params), seed=0)
        if value is None:
            self.smac.tell(info, TrialValue(cost=float("inf"), status=StatusType.CRASHED))
        else:
            self.smac.tell(info, TrialValue(cost=self._cost(value)))
        self._pending = [c for c in self._pending if c.number != candidate.number]
        self._told += 1
        self._note("told", candidate, value)


def _configspace_parameter(ConfigSpace, p: Parameter):
    if p.type == "categorical":
        return ConfigSpace.Categorical(p.name, list(p.choices))
    if p.type == "int":
        return ConfigSpace.Integer(p.name, (int(p.low), int(p.high)), log=p.log)
    if p.step is not None:  # ConfigSpace has no stepped floats: the grid, ordered
        return ConfigSpace.Ordinal(p.name, p.grid())
    return ConfigSpace.Float(p.name, (float(p.low), float(p.high)), log=p.log)


def _plain(values: dict) -> dict:
    """numpy scalars from ConfigSpace as Python numbers (JSON, agent specs)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}


def _never_called(config, seed: int = 0) -> float:
    raise RuntimeError("the tune step evaluates candidates itself (ask/tell)")
