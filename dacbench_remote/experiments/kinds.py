"""The step kinds by the name `kind = ...` takes: the one registry of them.

A new kind is a StepKind subclass added with `register_kind`; specs can use it from then on
(`train`, RL agents in their own images, is one such kind).
"""

from __future__ import annotations

from .evaluate import EvaluateStep
from .function_step import RunStep
from .report_step import ReportStep
from .step import StepKind
from .sweep_step import SweepStep
from .train_step import TrainStep
from .tune import TuneStep

STEP_KINDS: dict[str, StepKind] = {}


def register_kind(kind: StepKind) -> StepKind:
    """Make `kind` available to specs as `kind = "<kind.name>"` (replacing one of that name)."""
    STEP_KINDS[kind.name] = kind
    return kind


for _kind in (SweepStep(), TuneStep(), EvaluateStep(), TrainStep(), ReportStep(), RunStep()):
    register_kind(_kind)
