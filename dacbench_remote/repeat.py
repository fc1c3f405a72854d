"""Repeat a recorded run from its results file and compare it with the record, episode by episode."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import BadConfig, ImageError
from .runner import RemoteRunner


@dataclass
class RepeatOutcome:
    run_id: str
    episodes: list[dict]
    identical: bool
    image_sha256: str | None


def load_run(path: Path, run_id: str | None = None) -> list[dict]:
    """The records of one run (`run_id`, or the last run in the file), in episode order."""
    runs: dict[str, list[dict]] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise BadConfig(f"cannot read results file {path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            runs.setdefault(record["run_id"], []).append(record)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise BadConfig(f"{path}:{number} is not a dacbench-remote results line: {exc}") from exc
    if not runs:
        raise BadConfig(f"{path} holds no results")
    chosen = run_id or list(runs)[-1]
    if chosen not in runs:
        raise BadConfig(f"{path} has no run {chosen!r}; runs in it: {', '.join(runs)}")
    return sorted(runs[chosen], key=lambda record: record["episode"])


def repeat_run(path: Path, *, run_id: str | None = None, results_path: Path | None = None
               ) -> RepeatOutcome:
    """Run again with the recorded benchmark, config, agent, seeds, experiment and runtime."""
    records = load_run(path, run_id)
    first = records[0]
    runtime = first.get("runtime", "local")
    runner = RemoteRunner(
        first["benchmark"], config=first.get("config"), kwargs=first.get("kwargs"),
        runtime=runtime, experiment=first.get("experiment"),
        image=first.get("image_path") if not first.get("experiment") else None,
        python=first.get("python") if runtime == "local" else None, results_path=results_path,
    )
    with runner:
        results = runner.run(first["agent"], len(records), seed=first["base_seed"])
        now = runner.provenance(first["base_seed"], "", first["agent"]).get("image_sha256")
    recorded_digest = first.get("image_sha256")
    if recorded_digest and now and recorded_digest != now:
        raise ImageError(
            f"the image differs from the recorded one: recorded sha256 {recorded_digest}, the "
            f"cached image has {now}; fetch the published image for {first.get('experiment')} "
            "(dacbench-remote pull) instead of a local build"
        )
    episodes = []
    for record, result in zip(records, results, strict=True):
        same = record["return"] == result.return_ and record["length"] == result.length
        episodes.append({"episode": record["episode"], "seed": record["seed"], "same": same,
                         "recorded": record["return"], "repeated": result.return_})
    return RepeatOutcome(first["run_id"], episodes, all(e["same"] for e in episodes), now)
