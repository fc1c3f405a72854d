"""`report`: write the report steps of an experiment again from the recorded outputs of the
steps they need, without running anything (a step that is not complete is named)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .dag import upstream
from .driver import experiment_dir
from .report_step import write_report
from .spec import parse_experiment


@dataclass
class ExperimentReport:
    directory: Path
    written: dict[str, dict] = field(default_factory=dict)  # report step -> its outputs
    missing: dict[str, list[str]] = field(default_factory=dict)  # report step -> steps lacking

    def __str__(self) -> str:
        lines = [f"experiment {self.directory}"]
        for name, outputs in self.written.items():
            lines.append(f"report {name}: {outputs['markdown']} (html: {outputs['html']}; "
                         f"{len(outputs['figures'])} figure(s))")
            lines += [f"  note: {note}" for note in outputs.get("notes", [])]
        for name, steps in self.missing.items():
            lines.append(f"report {name}: not written; these steps are not complete: "
                         f"{', '.join(steps)} (run the experiment)")
        if not self.written and not self.missing:
            lines.append("the experiment has no report step")
        return "\n".join(lines)


def report(experiment: str | Path) -> ExperimentReport:
    """Rewrite each report step's Markdown, HTML and PNGs from what its needs recorded."""
    layout = experiment_dir(experiment)
    spec = parse_experiment(layout.spec.read_text(encoding="utf-8"), layout.spec)
    result = ExperimentReport(layout.path)
    for name, step in spec.steps.items():
        if step.kind != "report":
            continue
        recorded = {n: layout.outputs(n) for n in upstream(spec.needs, name)}
        missing = sorted(n for n, r in recorded.items() if r is None)
        if missing:
            result.missing[name] = missing
            continue
        run_id = (layout.outputs(name) or {}).get("run_id", "")
        result.written[name] = write_report(layout.step_dir(name), step.params,
                                            {n: recorded[n]["outputs"] for n in step.needs},
                                            spec.name, run_id)
    return result
