"""The experiment spec (`sweep.toml`): parsed, checked and expanded into trials before any run.

Every problem raises `BadConfig` naming the file, the key (`grid.benchmarks[1].vary.cutoff`) and
what is wrong with it, so that a sweep of a thousand trials never dies on trial 500 over a typo.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RUNTIME_NAMES, parse_toml
from ..errors import BadConfig
from ..runtimes.base import parse_bind
from ..runtimes.options import RuntimeOptions
from ..wire.baselines import SPEC_FORMS, check_available, is_baseline_spec, parse_baseline
from .executors import EXECUTORS
from .trial import Trial

DEFAULT_TIME_LIMIT = 3600.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_IDENTIFIER_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$")
_HMS = re.compile(r"^\s*(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}))?\s*$")
_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}

_TOP_KEYS = {"name", "dir", "episodes", "time_limit", "retries", "grid", "trials", "runtime",
             "executor"}
_GRID_KEYS = {"benchmarks", "agents", "seeds"}
_BENCH_KEYS = {"benchmark", "experiment", "experiments", "config", "kwargs", "vary",
               "vary_kwargs", "episodes", "time_limit", "retries", "image"}
_TRIAL_KEYS = {"benchmark", "experiment", "config", "kwargs", "agent", "seed", "seeds",
               "episodes", "time_limit", "retries", "image"}
_RUNTIME_KEYS = {"kind", "image", "python", "binds", "env", "gpu", "startup_timeout",
                 "call_timeout"}
_EXECUTOR_KEYS = {"kind", "local", "slurm"}
_LOCAL_KEYS = {"workers", "warm"}
_SLURM_KEYS = {"partition", "time", "cpus_per_task", "mem_gb", "gres", "array_parallelism",
               "cache_dir", "folder", "account", "qos", "constraint", "setup", "additional",
               "poll_interval", "trials_per_task", "task_length", "trial_time", "warm"}
DEFAULT_TASK_LENGTH = 1800.0  # seconds of trials an array task aims at, by default


@dataclass(frozen=True)
class LocalOptions:
    """The local executor: how many trials run at once (default: one per core), and whether
    each worker keeps a warm zygote server whose forked children run the trials (warm)."""

    workers: int | None = None
    warm: bool = True


@dataclass(frozen=True)
class SlurmOptions:
    """The slurm executor: sbatch options of the one array job, plus where images are cached.

    Each array task runs a chunk of trials in one warm container (`warm`, as the local executor
    with one worker): `trials_per_task` of them, or as many as fill `task_length` seconds at
    `trial_time` seconds each (default: the median time of the sweep's finished trials, else
    60 s); no fewer tasks than `array_parallelism`. `time` is minutes per array task (default:
    the longest trial time limit, plus 1.5 x the expected time of the chunk's other trials, plus
    5 minutes).
    """

    partition: str | None = None
    time: int | None = None
    cpus_per_task: int = 1
    mem_gb: float | None = None
    gres: str | None = None
    array_parallelism: int | None = None
    cache_dir: str | None = None
    folder: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()
    additional: dict = field(default_factory=dict)
    poll_interval: float = 1.0
    trials_per_task: int | None = None
    task_length: float = DEFAULT_TASK_LENGTH
    trial_time: float | None = None
    warm: bool = True


@dataclass(frozen=True)
class ExecutorOptions:
    kind: str = "local"
    local: LocalOptions = LocalOptions()
    slurm: SlurmOptions = SlurmOptions()


@dataclass
class SweepSpec:
    """A checked spec: the sweep's name and directory, every trial, and how to execute them."""

    name: str
    path: Path
    dir: Path
    trials: list[Trial]
    executor: ExecutorOptions
    text: str

    def trial(self, trial_id: str) -> Trial:
        for trial in self.trials:
            if trial.id == trial_id:
                return trial
        raise KeyError(trial_id)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check `sweep.toml`; raise BadConfig naming the key and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BadConfig(f"sweep spec {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadConfig(f"sweep spec {path} cannot be read: {exc}") from exc
    return parse_spec(text, path)


def parse_spec(text: str, path: str | Path = "sweep.toml") -> SweepSpec:
    """Check a spec given as TOML text; relative paths in it are taken from `path`'s directory."""
    path = Path(path)
    where = _Where(path.name)
    data = parse_toml(text, path.name)
    base = path.resolve().parent
    _check_keys(data, _TOP_KEYS, where, "")

    name = _string(data, "name", where, required=True)
    if not _NAME.match(name):
        raise where.error("name", f"{name!r} must be letters, digits, '.', '_' or '-' (it names "
                                  "directories and Slurm jobs)")
    sweep_dir = _resolve(base, _string(data, "dir", where) or name)
    episodes = _positive_int(data.get("episodes", 1), where, "episodes")
    time_limit = _duration(data.get("time_limit", DEFAULT_TIME_LIMIT), where, "time_limit")
    retries = _count(data.get("retries", 0), where, "retries")
    runtime = _runtime(data.get("runtime", {}), where, base)
    executor = _executor(data.get("executor", {}), where, base)
    defaults = {"episodes": episodes, "time_limit": time_limit, "retries": retries,
                "runtime": runtime}

    trials: list[Trial] = []
    if "grid" in data:
        trials += _grid(data["grid"], where, base, defaults)
    if "trials" in data:
        trials += _explicit(data["trials"], where, base, defaults)
    if not trials:
        raise where.error("grid", "the spec defines no trials: add a [grid] with benchmarks, "
                                  "agents and seeds, or [[trials]] entries")
    _check_unique(trials, where)
    return SweepSpec(name, path, sweep_dir, trials, executor, text)


# -- sections --------------------------------------------------------------------------------


def _grid(grid: Any, where: _Where, base: Path, defaults: dict) -> list[Trial]:
    _table(grid, where, "grid")
    _check_keys(grid, _GRID_KEYS, where, "grid")
    for key in ("benchmarks", "agents", "seeds"):
        if key not in grid:
            raise where.error(f"grid.{key}", "is required in [grid]")
    benchmarks = grid["benchmarks"]
    if not isinstance(benchmarks, list) or not benchmarks:
        raise where.error("grid.benchmarks", "must be a non-empty array of benchmark names or "
                                             "tables")
    agents = _agents(grid["agents"], where, "grid.agents")
    seeds = _seeds(grid["seeds"], where, "grid.seeds")
    trials = []
    for index, entry in enumerate(benchmarks):
        key = f"grid.benchmarks[{index}]"
        for variant in _benchmark_variants(entry, where, key, base, defaults):
            for agent in agents:
                _check_baseline(agent, variant["benchmark"], where, "grid.agents",
                                "; pair it with the benchmarks that have it in [[trials]]")
            for agent, seed in itertools.product(agents, seeds):
                trials.append(Trial(agent=agent, seed=seed, **variant))
    return trials


def _explicit(entries: Any, where: _Where, base: Path, defaults: dict) -> list[Trial]:
    if not isinstance(entries, list) or not entries:
        raise where.error("trials", "must be a non-empty array of tables ([[trials]])")
    trials = []
    for index, entry in enumerate(entries):
        key = f"trials[{index}]"
        _table(entry, where, key)
        _check_keys(entry, _TRIAL_KEYS, where, key)
        if "agent" not in entry:
            raise where.error(f"{key}.agent", "is required")
        agent = _agent(entry["agent"], where, f"{key}.agent")
        if "seed" in entry and "seeds" in entry:
            raise where.error(f"{key}.seeds", "give either seed or seeds, not both")
        if "seeds" in entry:
            seeds = _seeds(entry["seeds"], where, f"{key}.seeds")
        else:
            seeds = [_int(entry.get("seed", 0), where, f"{key}.seed")]
        if "experiments" in entry:
            raise where.error(f"{key}.experiments", "use experiment (one id) in [[trials]]")
        variant = _benchmark_fields(entry, where, key, base, defaults)
        _check_baseline(agent, variant["benchmark"], where, f"{key}.agent")
        trials += [Trial(agent=agent, seed=seed, **variant) for seed in seeds]
    return trials


def _benchmark_variants(entry: Any, where: _Where, key: str, base: Path,
                        defaults: dict) -> list[dict]:
    """One grid benchmark entry → its variants (experiments x config grid x kwargs grid)."""
    if isinstance(entry, str):
        entry = {"benchmark": entry}
    _table(entry, where, key, "a benchmark name or a table with `benchmark = ...`")
    _check_keys(entry, _BENCH_KEYS, where, key)
    if "experiment" in entry and "experiments" in entry:
        raise where.error(f"{key}.experiments", "give either experiment or experiments, not both")
    fields = _benchmark_fields(entry, where, key, base, defaults)
    experiments: list[str | None] = [fields.pop("experiment")]
    if "experiments" in entry:
        values = entry["experiments"]
        if (not isinstance(values, list) or not values
                or not all(isinstance(v, str) and v for v in values)):
            raise where.error(f"{key}.experiments", "must be a non-empty array of experiment ids")
        experiments = list(values)
    config_variants = _vary(entry.get("vary"), fields["config"], where, f"{key}.vary")
    kwargs_variants = _vary(entry.get("vary_kwargs"), fields["kwargs"], where,
                            f"{key}.vary_kwargs")
    variants = []
    for experiment, config, kwargs in itertools.product(experiments, config_variants,
                                                         kwargs_variants):
        variants.append({**fields, "experiment": experiment, "config": config, "kwargs": kwargs})
    return variants


def _benchmark_fields(entry: dict, where: _Where, key: str, base: Path, defaults: dict) -> dict:
    if "benchmark" not in entry:
        raise where.error(f"{key}.benchmark", "is required")
    benchmark = _benchmark(entry["benchmark"], where, f"{key}.benchmark")
    experiment = entry.get("experiment")
    if experiment is not None and (not isinstance(experiment, str) or not experiment):
        raise where.error(f"{key}.experiment", "must be a non-empty string (an experiment id)")
    config = _json_table(entry.get("config", {}), where, f"{key}.config")
    kwargs = _json_table(entry.get("kwargs", {}), where, f"{key}.kwargs")
    runtime = defaults["runtime"]
    if "image" in entry:
        image = _string(entry, "image", where, prefix=key)
        runtime = runtime.replace(image=_image_ref(base, image))
    return {
        "benchmark": benchmark,
        "experiment": experiment,
        "config": config,
        "kwargs": kwargs,
        "episodes": _positive_int(entry.get("episodes", defaults["episodes"]), where,
                                  f"{key}.episodes"),
        "time_limit": _duration(entry.get("time_limit", defaults["time_limit"]), where,
                                f"{key}.time_limit"),
        "retries": _count(entry.get("retries", defaults["retries"]), where, f"{key}.retries"),
        "runtime": runtime,
    }


def _vary(vary: Any, fixed: dict, where: _Where, key: str) -> list[dict]:
    """The cartesian product of `vary`'s value lists, each merged over the fixed table."""
    if vary is None:
        return [fixed]
    _table(vary, where, key)
    if not vary:
        raise where.error(key, "is empty; remove it or give each key an array of values")
    names = list(vary)
    for name in names:
        values = vary[name]
        if not isinstance(values, list) or not values:
            raise where.error(f"{key}.{name}", "must be a non-empty array of values to sweep over")
        for value in values:
            _check_json(value, where, f"{key}.{name}")
        if name in fixed:
            raise where.error(f"{key}.{name}", "is also set as a fixed value; set it in one place")
    return [{**fixed, **dict(zip(names, combo, strict=True))}
            for combo in itertools.product(*(vary[n] for n in names))]


def _section_kind(table: Any, where: _Where, section: str, keys, kinds: tuple[str, ...],
                  default: str) -> str:
    """Check a [runtime]/[executor] table's keys; its `kind`, one of `kinds`."""
    _table(table, where, section)
    _check_keys(table, keys, where, section)
    kind = table.get("kind", default)
    if kind not in kinds:
        article = "an" if section[0] in "aeiou" else "a"
        raise where.error(f"{section}.kind", f"{kind!r} is not {article} {section}; use one of "
                                             f"{', '.join(kinds)}")
    return kind


def _runtime(table: Any, where: _Where, base: Path) -> RuntimeOptions:
    kind = _section_kind(table, where, "runtime", _RUNTIME_KEYS, RUNTIME_NAMES, "auto")
    image = _string(table, "image", where, prefix="runtime")
    python = _string(table, "python", where, prefix="runtime")
    binds = table.get("binds", [])
    if not isinstance(binds, list) or not all(isinstance(b, str) and b for b in binds):
        raise where.error("runtime.binds", "must be an array of 'SRC[:DST[:ro]]' strings")
    for bind in binds:
        try:
            parse_bind(bind)  # the runtimes' own rule, so a spec never accepts what they refuse
        except BadConfig as exc:
            raise where.error("runtime.binds", f"{bind!r} is not 'SRC[:DST[:ro|rw]]': {exc}") from exc
    env = table.get("env", {})
    _table(env, where, "runtime.env")
    for name, value in env.items():
        if not isinstance(value, str):
            raise where.error(f"runtime.env.{name}", "must be a string (environment values are "
                                                     "text; quote numbers)")
    gpu = table.get("gpu", False)
    if not isinstance(gpu, bool):
        raise where.error("runtime.gpu", "must be true or false")
    return RuntimeOptions(
        kind=kind,
        image=_image_ref(base, image) if image else None,
        python=python,
        binds=tuple(binds),
        env=dict(env),
        gpu=gpu,
        startup_timeout=_duration(table.get("startup_timeout", 60.0), where,
                                  "runtime.startup_timeout"),
        call_timeout=_duration(table.get("call_timeout", 300.0), where, "runtime.call_timeout"),
    )


def _executor(table: Any, where: _Where, base: Path) -> ExecutorOptions:
    kind = _section_kind(table, where, "executor", _EXECUTOR_KEYS, EXECUTORS, "local")
    local_table = table.get("local", {})
    _table(local_table, where, "executor.local")
    _check_keys(local_table, _LOCAL_KEYS, where, "executor.local")
    workers = local_table.get("workers")
    if workers is not None:
        workers = _positive_int(workers, where, "executor.local.workers")
    warm = local_table.get("warm", True)
    if not isinstance(warm, bool):
        raise where.error("executor.local.warm", f"must be true or false, got {warm!r}")
    s = table.get("slurm", {})
    _table(s, where, "executor.slurm")
    _check_keys(s, _SLURM_KEYS, where, "executor.slurm")
    p = "executor.slurm"
    time_minutes = None
    if "time" in s:
        time_minutes = max(1, math.ceil(_duration(s["time"], where, f"{p}.time", unit=60) / 60))
    mem_gb = s.get("mem_gb")
    if mem_gb is not None and (isinstance(mem_gb, bool) or not isinstance(mem_gb, int | float)
                               or mem_gb <= 0):
        raise where.error(f"{p}.mem_gb", f"must be a positive number of GB, got {mem_gb!r}")
    setup = s.get("setup", [])
    if not isinstance(setup, list) or not all(isinstance(line, str) for line in setup):
        raise where.error(f"{p}.setup", "must be an array of shell lines")
    additional = s.get("additional", {})
    _table(additional, where, f"{p}.additional")
    for name, value in additional.items():
        if not isinstance(value, str | int | float | bool):
            raise where.error(f"{p}.additional.{name}", "must be a string, number or boolean")
    folder = _string(s, "folder", where, prefix=p)
    cache_dir = _string(s, "cache_dir", where, prefix=p)
    parallelism = s.get("array_parallelism")
    per_task = s.get("trials_per_task")
    slurm_warm = s.get("warm", True)
    if not isinstance(slurm_warm, bool):
        raise where.error(f"{p}.warm", f"must be true or false, got {slurm_warm!r}")
    slurm = SlurmOptions(
        partition=_string(s, "partition", where, prefix=p),
        time=time_minutes,
        cpus_per_task=_positive_int(s.get("cpus_per_task", 1), where, f"{p}.cpus_per_task"),
        mem_gb=mem_gb,
        gres=_string(s, "gres", where, prefix=p),
        array_parallelism=(None if parallelism is None
                           else _positive_int(parallelism, where, f"{p}.array_parallelism")),
        cache_dir=str(_resolve(base, cache_dir)) if cache_dir else None,
        folder=str(_resolve(base, folder)) if folder else None,
        account=_string(s, "account", where, prefix=p),
        qos=_string(s, "qos", where, prefix=p),
        constraint=_string(s, "constraint", where, prefix=p),
        setup=tuple(setup),
        additional=dict(additional),
        poll_interval=_duration(s.get("poll_interval", 1.0), where, f"{p}.poll_interval"),
        trials_per_task=(None if per_task is None
                         else _positive_int(per_task, where, f"{p}.trials_per_task")),
        task_length=_duration(s.get("task_length", DEFAULT_TASK_LENGTH), where,
                              f"{p}.task_length"),
        trial_time=(None if "trial_time" not in s
                    else _duration(s["trial_time"], where, f"{p}.trial_time")),
        warm=slurm_warm,
    )
    return ExecutorOptions(kind=kind, local=LocalOptions(workers, warm), slurm=slurm)


# -- values ----------------------------------------------------------------------------------


class _Where:
    """Formats errors as `FILE: KEY: PROBLEM`."""

    def __init__(self, filename: str):
        self.filename = filename

    def error(self, key: str, problem: str) -> BadConfig:
        return BadConfig(f"{self.filename}: {key}: {problem}")


def _check_keys(table: Mapping, allowed: set[str], where: _Where, prefix: str) -> None:
    for name in table:
        if name not in allowed:
            key = f"{prefix}.{name}" if prefix else name
            raise where.error(key, f"unknown key; expected one of {', '.join(sorted(allowed))}")


def _table(value: Any, where: _Where, key: str, expected: str = "a table") -> None:
    if not isinstance(value, dict):
        raise where.error(key, f"must be {expected}, got {type(value).__name__} {value!r}")


def _string(table: Mapping, name: str, where: _Where, *, prefix: str = "",
            required: bool = False) -> str | None:
    key = f"{prefix}.{name}" if prefix else name
    if name not in table:
        if required:
            raise where.error(key, "is required")
        return None
    value = table[name]
    if not isinstance(value, str) or not value.strip():
        raise where.error(key, f"must be a non-empty string, got {value!r}")
    return value


def _int(value: Any, where: _Where, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(key, f"must be an integer, got {value!r}")
    return value


def _count(value: Any, where: _Where, key: str) -> int:
    number = _int(value, where, key)
    if number < 0:
        raise where.error(key, f"must be 0 or more, got {number}")
    return number


def _positive_int(value: Any, where: _Where, key: str) -> int:
    value = _int(value, where, key)
    if value < 1:
        raise where.error(key, f"must be at least 1, got {value}")
    return value


def _duration(value: Any, where: _Where, key: str, unit: float = 1) -> float:
    """Seconds from a number (in `unit` seconds), '90s', '10m', '2h', '1d' or '[D-]HH:MM[:SS]'."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value) * unit
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            seconds = float(match.group(1)) * (_UNITS[match.group(2)] if match.group(2) else unit)
        elif _HMS.match(value):
            days, a, b, c = _HMS.match(value).groups()
            # Slurm's reading: H:MM:SS, or MM:SS when only two fields are given.
            h, m, s = (int(a), int(b), int(c)) if c is not None else (0, int(a), int(b))
            seconds = float(int(days or 0) * 86400 + h * 3600 + m * 60 + s)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise where.error(key, f"must be a positive duration (seconds, or like '90s', '10m', "
                               f"'2h', '01:30:00'), got {value!r}")
    return seconds


def _seeds(value: Any, where: _Where, key: str) -> list[int]:
    if isinstance(value, dict):
        _check_keys(value, {"start", "count"}, where, key)
        if "count" not in value:
            raise where.error(f"{key}.count", "is required in a seed range")
        start = _int(value.get("start", 0), where, f"{key}.start")
        count = _positive_int(value["count"], where, f"{key}.count")
        return list(range(start, start + count))
    if not isinstance(value, list) or not value:
        raise where.error(key, "must be a non-empty array of integers or {start = N, count = M}")
    seeds = [_int(v, where, key) for v in value]
    if len(set(seeds)) != len(seeds):
        raise where.error(key, f"repeats a seed: {seeds}")
    return seeds


def _agents(value: Any, where: _Where, key: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise where.error(key, "must be a non-empty array of agent specs (random, static, "
                               f"static:ACTION_JSON, module:factory, {SPEC_FORMS})")
    agents = [_agent(v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if len(set(agents)) != len(agents):
        raise where.error(key, f"repeats an agent: {agents}")
    return agents


def _agent(value: Any, where: _Where, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise where.error(key, f"must be an agent spec string, got {value!r}")
    if value in ("random", "static"):
        return value
    if is_baseline_spec(value):
        try:
            parse_baseline(value)
        except BadConfig as exc:
            raise where.error(key, str(exc)) from None
        return value
    if value.startswith("static:"):
        try:
            json.loads(value.partition(":")[2])
        except json.JSONDecodeError as exc:
            raise where.error(key, f"{value!r}: the static action is not valid JSON ({exc})") \
                from exc
        return value
    module, sep, attr = value.partition(":")
    if not sep or not _IDENTIFIER_PATH.match(module) or not _IDENTIFIER_PATH.match(attr):
        raise where.error(key, f"{value!r} is not an agent; use random, static, "
                               f"static:ACTION_JSON, module:factory or {SPEC_FORMS}")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise where.error(key, f"agent module {module!r} cannot be found: {exc}") from exc
    if found is None:
        raise where.error(key, f"agent module {module!r} is not importable here (is it "
                               "installed or on PYTHONPATH?)")
    return value


def _check_baseline(agent: str, benchmark: str, where: _Where, key: str, hint: str = "") -> None:
    """A DACBench baseline runs only on DACBench benchmarks that have its policy."""
    if not is_baseline_spec(agent):
        return
    if benchmark.startswith("gymnasium:"):
        raise where.error(key, f"{agent} runs on DACBench benchmarks, not on {benchmark}{hint}")
    try:
        check_available(parse_baseline(agent), benchmark.rpartition(":")[2])
    except BadConfig as exc:
        raise where.error(key, f"{exc}{hint}") from None


def _benchmark(value: Any, where: _Where, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(key, f"must be a benchmark name, got {value!r}")
    if value.startswith("gymnasium:"):
        if not value.partition(":")[2].strip():
            raise where.error(key, f"{value!r} names no gymnasium environment id")
        return value
    if ":" in value:
        module, _, attr = value.partition(":")
        if not _IDENTIFIER_PATH.match(module) or not _IDENTIFIER_PATH.match(attr):
            raise where.error(key, f"{value!r} is not 'package.module:factory'")
        return value
    if not _IDENTIFIER_PATH.match(value):
        raise where.error(key, f"{value!r} is not a DACBench benchmark name, "
                               "'gymnasium:ENV_ID' or 'package.module:factory'")
    return value


def _json_table(value: Any, where: _Where, key: str) -> dict:
    _table(value, where, key)
    _check_json(value, where, key)
    return dict(value)


def _check_json(value: Any, where: _Where, key: str) -> None:
    """Only values that JSON (and so trial ids and the wire) can carry exactly."""
    if isinstance(value, dict):
        for name, item in value.items():
            _check_json(item, where, f"{key}.{name}")
    elif isinstance(value, list):
        for item in value:
            _check_json(item, where, key)
    elif isinstance(value, float) and not math.isfinite(value):
        raise where.error(key, f"{value!r} is not allowed (JSON has no nan/inf)")
    elif not isinstance(value, str | int | float | bool):
        raise where.error(key, f"{type(value).__name__} values are not supported "
                               "(use strings, numbers, booleans, arrays or tables)")


def _check_unique(trials: list[Trial], where: _Where) -> None:
    seen: dict[str, Trial] = {}
    for trial in trials:
        if trial.id in seen:
            raise where.error("trials", f"two entries define the same trial {trial.id} "
                                        f"({trial.label()}); remove the duplicate")
        seen[trial.id] = trial


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _image_ref(base: Path, image: str) -> str:
    """Image files are taken relative to the spec; registry references stay as written."""
    if "://" in image:
        return image
    return str(_resolve(base, image))
