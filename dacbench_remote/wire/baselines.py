"""DACBench's baselines as agent specs (`dacbench:random[:FIXED]`, `dacbench:static:ACTION`,
`dacbench:optimal`, `dacbench:dynamic`), shared by the host, which refuses what cannot run before
any server starts, and the server, which runs them next to the env (server/baselines).

The table of which benchmark has which policy repeats DACBench's `OPTIMAL_POLICIES` and
`NON_OPTIMAL_POLICIES` (the same in 0.3.0 and 0.5.6; tests/test_baselines.py checks it), so a
host without DACBench can refuse early; the server checks DACBench's own dicts again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import BadConfig

PREFIX = "dacbench:"
# DACBench's run_baselines defaults (its --seeds and --num_episodes).
DEFAULT_SEEDS = tuple(range(10))
DEFAULT_EPISODES = 10
# Our kind, DACBench's run_baselines option and the name of its policy table.
KINDS = {"random": "--random", "static": "--static", "optimal": "--optimal",
         "dynamic": "--dyna_baseline"}
POLICY_TABLES = {"optimal": "OPTIMAL_POLICIES", "dynamic": "NON_OPTIMAL_POLICIES"}
# DACBench's policies by benchmark class (dacbench.envs.policies, 0.3.0 to 0.5.6).
POLICY_BENCHMARKS: dict[str, tuple[str, ...]] = {
    "optimal": ("LubyBenchmark", "FunctionApproximationBenchmark", "FastDownwardBenchmark"),
    "dynamic": ("CMAESBenchmark", "SGDBenchmark"),
}
# DACBench's benchmark classes (0.3.0 to 0.5.6): names the host can map without DACBench.
DACBENCH_BENCHMARKS = ("CMAESBenchmark", "DACBOBenchmark", "FastDownwardBenchmark",
                       "FunctionApproximationBenchmark", "LubyBenchmark", "SGDBenchmark",
                       "TheoryBenchmark", "ToySGDBenchmark")
SPEC_FORMS = "dacbench:random[:FIXED], dacbench:static:ACTION, dacbench:optimal or dacbench:dynamic"


@dataclass(frozen=True)
class BaselineSpec:
    """One of DACBench's baselines: its kind, the random agent's switching interval (`fixed`,
    DACBench's --fixed_random) and the static agent's action."""

    kind: str
    fixed: int = 0
    action: Any = None

    def to_request(self) -> dict:
        """What the server's run_baseline takes (besides benchmark, seed and episodes)."""
        return {"kind": self.kind, "fixed": self.fixed, "action": self.action}


def is_baseline_spec(agent: Any) -> bool:
    """True for an agent spec string naming one of DACBench's baselines (`dacbench:...`)."""
    return isinstance(agent, str) and agent.startswith(PREFIX)


def parse_baseline(spec: str) -> BaselineSpec:
    """The baseline a `dacbench:...` spec names; BadConfig saying the accepted forms if none.

    `dacbench:random` samples a new action every step (DACBench's default --fixed_random 0),
    `dacbench:random:F` keeps each one for F steps; `dacbench:static:ACTION` plays ACTION (JSON:
    `2`, `0.5`, `[1, 0]`).
    """
    kind, _, argument = spec.removeprefix(PREFIX).partition(":")
    if kind not in KINDS:
        raise BadConfig(f"agent {spec!r}: {kind!r} is not one of DACBench's baselines; use "
                        f"{SPEC_FORMS}")
    if kind == "random":
        if not argument:
            return BaselineSpec("random")
        if not (argument.isascii() and argument.isdigit()):
            raise BadConfig(f"agent {spec!r}: FIXED in dacbench:random:FIXED is the number of "
                            f"steps each random action is kept (an integer >= 0), not {argument!r}")
        return BaselineSpec("random", fixed=int(argument))
    if kind == "static":
        if not argument:
            raise BadConfig(f"agent {spec!r}: a static baseline needs its action, e.g. "
                            "dacbench:static:2 or dacbench:static:0.5 (JSON)")
        try:
            action = json.loads(argument)
        except json.JSONDecodeError as exc:
            raise BadConfig(f"agent {spec!r}: the static action is not valid JSON ({exc})") \
                from exc
        return BaselineSpec("static", action=action)
    if argument:
        raise BadConfig(f"agent {spec!r}: dacbench:{kind} takes no argument")
    return BaselineSpec(kind)


def dacbench_class_name(benchmark: str) -> str | None:
    """DACBench's class name for a benchmark name (`Luby`, `lubybenchmark`, `LubyBenchmark`),
    or None when it names none of DACBench's benchmarks (a `module:attr`, a gymnasium id)."""
    wanted = {benchmark.lower(), benchmark.lower() + "benchmark"}
    return next((name for name in DACBENCH_BENCHMARKS if name.lower() in wanted), None)


def unavailable(kind: str, class_name: str, having: list[str] | tuple[str, ...]) -> str | None:
    """Why `kind` cannot run on `class_name` given the benchmarks `having` its policy, or None."""
    if kind not in POLICY_TABLES or class_name in having:
        return None
    return (f"dacbench:{kind} ({KINDS[kind]}) is not available for {class_name}: DACBench has "
            f"{kind} policies ({POLICY_TABLES[kind]}) only for {', '.join(having)}")


def check_available(spec: BaselineSpec, benchmark: str) -> None:
    """BadConfig when DACBench has no such policy for `benchmark` (a name or class name); names
    it cannot place (not DACBench's) are left to the server, which checks DACBench's own dicts."""
    if spec.kind not in POLICY_BENCHMARKS:
        return
    class_name = dacbench_class_name(benchmark)
    problem = class_name and unavailable(spec.kind, class_name, POLICY_BENCHMARKS[spec.kind])
    if problem:
        raise BadConfig(problem)


def experiment_name(spec: BaselineSpec, class_name: str, seed: int) -> str:
    """The directory run_baselines names a run (random_S, random_fixedF_S, static_A_S,
    optimal_S, csa_S): DACBench's own rule, including optimal_S for SGD's cosine annealing."""
    if spec.kind == "random":
        return f"random_fixed{spec.fixed}_{seed}" if spec.fixed > 1 else f"random_{seed}"
    if spec.kind == "static":
        return f"static_{spec.action}_{seed}"
    return f"csa_{seed}" if class_name == "CMAESBenchmark" else f"optimal_{seed}"
