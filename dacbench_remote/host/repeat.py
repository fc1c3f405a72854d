"""Repeat a recorded run from its results file and compare it with the record, episode by episode."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._sys.files import sha256_file
from ..errors import BadConfig, ImageChanged, ImageNotFound
from ..runtimes.options import RuntimeOptions
from .results import read_run
from .runner import RemoteRunner

# Agent specs make_agent rebuilds on its own, without the code that ran them.
_BUILTIN_AGENTS = ("random", "static")


@dataclass
class RepeatOutcome:
    run_id: str
    episodes: list[dict]
    identical: bool
    image_sha256: str | None


def repeat_run(path: Path, *, run_id: str | None = None, results_path: Path | None = None
               ) -> RepeatOutcome:
    """Run again with the recorded benchmark, config, agent, seeds, image and runtime.

    Raises BadConfig when the run cannot be rebuilt from its record (an agent object), and
    ImageNotFound when its image is gone, ImageChanged when it is no longer the recorded one.
    """
    records = read_run(path, run_id)
    first = records[0]
    check_agent_rebuildable(first, path)
    runtime = first.get("runtime", "local")
    image = recorded_image(first, path) if not first.get("experiment") else None
    options = RuntimeOptions(kind=runtime, image=str(image) if image else None,
                             python=first.get("python") if runtime == "local" else None)
    runner = RemoteRunner(
        first["benchmark"], config=first.get("config"), kwargs=first.get("kwargs"),
        experiment=first.get("experiment"), results_path=results_path, options=options,
    )
    with runner:
        now = runner.provenance(first["base_seed"], "", first["agent"]).get("image_sha256")
        recorded_digest = first.get("image_sha256")
        if recorded_digest and now and recorded_digest != now:
            raise ImageChanged(
                f"the image differs from the recorded one: recorded sha256 {recorded_digest}, "
                f"the cached image has {now}; fetch the published image for "
                f"{first.get('experiment')} (dacbench-remote pull) instead of a local build"
            )
        results = runner.run(first["agent"], len(records), seed=first["base_seed"])
    episodes = []
    for record, result in zip(records, results, strict=True):
        same = record["return"] == result.return_ and record["length"] == result.length
        episodes.append({"episode": record["episode"], "seed": record["seed"], "same": same,
                         "recorded": record["return"], "repeated": result.return_})
    return RepeatOutcome(first["run_id"], episodes, all(e["same"] for e in episodes), now)


def check_agent_rebuildable(record: dict, path: Path) -> None:
    """BadConfig unless the recorded agent is a spec make_agent can build again."""
    agent = record.get("agent")
    rebuildable = record.get("agent_rebuildable")
    if rebuildable is None:  # written before runs recorded it: only built-in specs are sure
        rebuildable = isinstance(agent, str) and (
            agent in _BUILTIN_AGENTS or agent.startswith("static:"))
    if not rebuildable:
        raise BadConfig(
            f"run {record['run_id']} in {path} used the agent {agent!r}, an object passed to "
            "run() that cannot be rebuilt from the results file. To repeat runs, pass the "
            "agent as a spec: random, static, static:ACTION_JSON or module:factory (a function "
            "factory(env, seed) returning the agent), or one of DACBench's baselines "
            "(dacbench:random, dacbench:optimal, ...); or repeat this run in Python with the "
            "same agent object"
        )


def recorded_image(record: dict, path: Path) -> str | None:
    """The .sif a run named with image=, after checking it is still the recorded file."""
    image = record.get("image_path")
    if not image:
        return None

    where = f"run {record['run_id']} in {path}"
    if not Path(image).is_file():
        raise ImageNotFound(f"the image {image} that {where} used is gone; put it back there "
                            "to repeat the run")
    recorded = record.get("image_sha256")
    if not recorded:
        raise ImageChanged(f"{where} names the image {image} but not its sha256, so it cannot be "
                         "checked to be the same image; run it again to record both")
    now = sha256_file(Path(image))
    if now != recorded:
        raise ImageChanged(f"the image {image} changed since {where} was recorded: recorded "
                         f"sha256 {recorded}, now {now}. Put the recorded image back at that "
                         "path to repeat the run, or start a new run with this image")
    return image
