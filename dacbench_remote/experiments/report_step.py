"""The `report` step: tables and plots of the steps it needs, as Markdown plus PNGs and one HTML
page: optimisation history (tune), return distributions per policy, per-instance comparison and
a ranking with bootstrap confidence intervals over seeds (evaluate, sweep)."""

from __future__ import annotations

import html
import json
import statistics
import time
from pathlib import Path

from .._sys.files import atomic_write_text
from ..sweeps.reporting import MATPLOTLIB_MISSING
from ..sweeps.sweepdir import read_jsonl
from ..sweeps.tables import read_results_csv
from . import plots
from .aggregate import bootstrap_ci
from .step import ANY, Params, StepContext, StepKind

FIGURES = {"history": "history.png", "distributions": "distributions.png",
           "instances": "instances.png", "ranking": "ranking.png"}


class ReportStep(StepKind):
    name = "report"
    keys = frozenset({"title", "confidence", "resamples"})
    runs_containers = False

    def check(self, params: Params) -> dict:
        return {"title": params.string("title", ""),
                "confidence": params.number("confidence", 0.95, low=0.0, high=1.0),
                "resamples": params.integer("resamples", 2000, minimum=100)}

    def outputs(self, params: dict) -> dict:
        return {"kind": ANY, "markdown": ANY, "html": ANY, "figures": ANY, "notes": ANY}

    def run(self, ctx: StepContext) -> dict:
        return write_report(ctx.dir, ctx.params, {n: ctx.inputs[n] for n in ctx.step.needs},
                            ctx.experiment.name, ctx.run_id)


def report_data(inputs: dict[str, dict], confidence: float = 0.95, resamples: int = 2000) -> dict:
    """What the figures and tables show, read from the needed steps' result files."""
    data: dict = {"histories": {}, "maximize": {}, "tunes": {}, "returns": {}, "instances": {},
                  "rankings": {}, "evaluations": {}}
    for step, outputs in inputs.items():
        kind = outputs.get("kind")
        if kind == "tune":
            told = [r for r in read_jsonl(Path(outputs["history"])) if r.get("event") == "told"
                    and r.get("value") is not None]
            data["histories"][step] = [(r["number"], r["value"]) for r in told]
            data["maximize"][step] = outputs.get("direction", "maximize") == "maximize"
            data["tunes"][step] = outputs
        elif kind in ("evaluate", "sweep"):
            rows = read_results_csv(outputs["results"])
            policies: dict[str, list[dict]] = {}
            for row in rows:
                policies.setdefault(row["policy"], []).append(row)
            data["returns"][step] = {n: [r["return"] for r in rs] for n, rs in policies.items()}
            # Policies whose episodes record no instance (not a DACBench env) have no line.
            per_instance = {n: _instance_means(rs) for n, rs in policies.items()
                            if any(r.get("instance") not in (None, "") for r in rs)}
            if per_instance:
                data["instances"][step] = per_instance
            ranked = []
            for name, rs in policies.items():
                seeds: dict[int, list[float]] = {}
                for r in rs:
                    seeds.setdefault(r["seed"], []).append(r["return"])
                low, high = bootstrap_ci([statistics.fmean(v) for v in seeds.values()],
                                         confidence, resamples)
                ranked.append((name, statistics.fmean(r["return"] for r in rs), low, high,
                               len(seeds), len(rs), rows and rs[0].get("image_sha256")))
            ranked.sort(key=lambda item: -item[1])
            data["rankings"][step] = ranked
            data["evaluations"][step] = rows
    return data


def _instance_means(rows: list[dict]) -> dict[str, float]:
    per: dict[str, list[float]] = {}
    for row in rows:
        if row.get("instance") not in (None, ""):
            per.setdefault(str(row["instance"]), []).append(row["return"])
    return {i: statistics.fmean(v) for i, v in per.items()}


def build_figures(data: dict, confidence: float = 0.95) -> dict:
    """name -> matplotlib Figure, for the panels the data has (ImportError without matplotlib)."""
    figures = {}
    if data["histories"]:
        figures["history"] = plots.history_figure(data["histories"], data["maximize"])
    if data["returns"]:
        figures["distributions"] = plots.distribution_figure(data["returns"])
        figures["ranking"] = plots.ranking_figure(
            {s: [r[:4] for r in ranked] for s, ranked in data["rankings"].items()}, confidence)
    if data["instances"]:
        figures["instances"] = plots.instance_figure(data["instances"])
    return figures


def write_report(directory: Path, params: dict, inputs: dict[str, dict], experiment: str,
                 run_id: str) -> dict:
    """Write report.md, report.html and the PNGs into `directory`; return the step's outputs."""
    directory.mkdir(parents=True, exist_ok=True)
    confidence = params.get("confidence", 0.95)
    data = report_data(inputs, confidence, params.get("resamples", 2000))
    notes, written = [], {}
    try:
        for name, figure in build_figures(data, confidence).items():
            plots.save(figure, directory / FIGURES[name])
            written[name] = str(directory / FIGURES[name])
    except ImportError:
        notes.append(MATPLOTLIB_MISSING)
    title = params.get("title") or f"Experiment {experiment}"
    blocks = _blocks(data, written, confidence)
    markdown = _markdown(title, experiment, run_id, blocks, notes)
    atomic_write_text(directory / "report.md", markdown)
    atomic_write_text(directory / "report.html", _html(title, experiment, run_id, blocks, notes))
    return {"kind": "report", "markdown": str(directory / "report.md"),
            "html": str(directory / "report.html"), "figures": written, "notes": notes}


def _blocks(data: dict, figures: dict, confidence: float) -> list[tuple]:
    """The report as a list of (heading | table | image | text) blocks, for both formats."""
    blocks: list[tuple] = []
    if data["tunes"]:
        blocks.append(("heading", "Tuning"))
        rows = [[step, str(o["trials"]), f"{o['best_value']:.6g}", _json(o["best"]),
                 o["best_agent"]] for step, o in data["tunes"].items()]
        blocks.append(("table", ["step", "trials", "best value", "best parameters",
                                 "best agent"], rows))
        if "history" in figures:
            blocks.append(("image", "optimisation history", Path(figures["history"]).name))
    for step, ranked in data["rankings"].items():
        blocks.append(("heading", f"Evaluation: {step}"))
        rows = [[str(i + 1), name, f"{mean:.6g}", f"[{low:.6g}, {high:.6g}]", str(seeds),
                 str(episodes), (sha or "")[:12]]
                for i, (name, mean, low, high, seeds, episodes, sha) in enumerate(ranked)]
        blocks.append(("table", ["rank", "policy", "mean return",
                                 f"{confidence:.0%} CI (seeds)", "seeds", "episodes",
                                 "image sha256"], rows))
        if step in data["instances"]:
            per = data["instances"][step]
            instances = sorted({i for m in per.values() for i in m}, key=plots._natural)
            blocks.append(("text", "Mean return per instance:"))
            blocks.append(("table", ["instance", *per],
                           [[i, *(f"{per[p].get(i, float('nan')):.6g}" for p in per)]
                            for i in instances]))
    for name, alt in (("ranking", "ranking"), ("distributions", "return distributions"),
                      ("instances", "per-instance comparison")):
        if name in figures:
            blocks.append(("image", alt, Path(figures[name]).name))
    return blocks


def _json(value) -> str:
    return json.dumps(value, sort_keys=True)


def _markdown(title, experiment, run_id, blocks, notes) -> str:
    lines = [f"# {title}", "", f"Experiment `{experiment}`, run `{run_id}`, written "
             f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}.", ""]
    for block in blocks:
        if block[0] == "heading":
            lines += [f"## {block[1]}", ""]
        elif block[0] == "text":
            lines += [block[1], ""]
        elif block[0] == "image":
            lines += [f"![{block[1]}]({block[2]})", ""]
        else:
            _, header, rows = block
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
                      for row in rows]
            lines.append("")
    lines += [f"Note: {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def _html(title, experiment, run_id, blocks, notes) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
             "img{max-width:100%}</style></head><body>",
             f"<h1>{e(title)}</h1><p>Experiment <code>{e(experiment)}</code>, run "
             f"<code>{e(run_id)}</code>.</p>"]
    for block in blocks:
        if block[0] == "heading":
            parts.append(f"<h2>{e(block[1])}</h2>")
        elif block[0] == "text":
            parts.append(f"<p>{e(block[1])}</p>")
        elif block[0] == "image":
            parts.append(f"<p><img src='{e(block[2])}' alt='{e(block[1])}'></p>")
        else:
            _, header, rows = block
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
    parts += [f"<p>Note: {e(note)}</p>" for note in notes]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
