"""repeat.py on hand-written results files: what it refuses to repeat, and why, before any work."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dacbench_remote.errors import BadConfig, ImageChanged, ImageNotFound
from dacbench_remote.host import repeat


class RunnerCalled(Exception):
    """Raised by the stand-in RemoteRunner: repeat got past its checks, with these arguments."""


@pytest.fixture
def runner_calls(monkeypatch) -> list[dict]:
    calls: list[dict] = []

    def stand_in(benchmark, **options):
        calls.append({"benchmark": benchmark, **options})
        raise RunnerCalled

    monkeypatch.setattr(repeat, "RemoteRunner", stand_in)
    return calls


def results_file(tmp_path: Path, **fields) -> Path:
    base = {"run_id": "r1", "benchmark": "Luby", "config": None, "kwargs": None,
            "agent": "random", "experiment": None, "runtime": "bwrap", "base_seed": 3,
            "seed": 3, "return": -1.0, "length": 8}
    path = tmp_path / "results.jsonl"
    lines = [{**base, **fields, "episode": episode, "seed": 3 + episode} for episode in range(2)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.parametrize("fields", [
    {"agent": "my_experiment.agents:PolicyAgent", "agent_rebuildable": False},
    {"agent": "random", "agent_rebuildable": False},
    {"agent": "my_experiment.agents:PolicyAgent"},  # older line: a class name or a factory?
])
def test_an_agent_object_is_refused_naming_it_and_the_specs(tmp_path, runner_calls, fields):
    path = results_file(tmp_path, **fields)
    with pytest.raises(BadConfig) as caught:
        repeat.repeat_run(path)
    message = str(caught.value)
    assert f"run r1 in {path} used the agent {fields['agent']!r}" in message
    assert "cannot be rebuilt from the results file" in message
    assert "random, static, static:ACTION_JSON or module:factory" in message
    assert runner_calls == []


@pytest.mark.parametrize("fields", [
    {"agent": "random"}, {"agent": "static"}, {"agent": "static:[1, 0]"},
    {"agent": "my_experiment.agents:make_agent", "agent_rebuildable": True},
])
def test_agent_specs_are_repeated(tmp_path, runner_calls, fields):
    with pytest.raises(RunnerCalled):
        repeat.repeat_run(results_file(tmp_path, **fields))
    assert runner_calls[0]["benchmark"] == "Luby" and runner_calls[0]["options"].kind == "bwrap"


def write_image(tmp_path: Path, content: bytes = b"SIF stand-in") -> tuple[Path, str]:
    image = tmp_path / "mine.sif"
    image.write_bytes(content)
    return image, hashlib.sha256(content).hexdigest()


def test_a_run_on_an_image_file_is_repeated_on_that_file(tmp_path, runner_calls):
    image, digest = write_image(tmp_path)
    with pytest.raises(RunnerCalled):
        repeat.repeat_run(results_file(tmp_path, image_path=str(image), image_sha256=digest))
    assert runner_calls[0]["options"].image == str(image)
    assert runner_calls[0]["experiment"] is None


def test_a_changed_image_file_is_refused_with_both_digests(tmp_path, runner_calls):
    image, digest = write_image(tmp_path)
    path = results_file(tmp_path, image_path=str(image), image_sha256=digest)
    image.write_bytes(b"rebuilt since")
    with pytest.raises(ImageChanged) as caught:
        repeat.repeat_run(path)
    message = str(caught.value)
    assert f"the image {image} changed since run r1 in {path} was recorded" in message
    assert f"recorded sha256 {digest}, now {hashlib.sha256(b'rebuilt since').hexdigest()}" \
        in message
    assert "Put the recorded image back at that path" in message
    assert runner_calls == []


def test_a_missing_image_file_is_named(tmp_path, runner_calls):
    image, digest = write_image(tmp_path)
    path = results_file(tmp_path, image_path=str(image), image_sha256=digest)
    image.unlink()
    with pytest.raises(ImageNotFound, match=rf"the image {image} that run r1 in {path} used is "
                                            "gone; put it back there"):
        repeat.repeat_run(path)
    assert runner_calls == []


def test_an_image_without_a_recorded_digest_cannot_be_checked(tmp_path, runner_calls):
    image, _ = write_image(tmp_path)
    with pytest.raises(ImageChanged, match=rf"names the image {image} but not its sha256"):
        repeat.repeat_run(results_file(tmp_path, image_path=str(image)))
    assert runner_calls == []


def test_an_experiment_run_ignores_image_path_and_uses_the_catalog(tmp_path, runner_calls):
    with pytest.raises(RunnerCalled):
        repeat.repeat_run(results_file(tmp_path, experiment="exp:0.01",
                                       image_path="/cache/luby-0.01.sif"))
    assert runner_calls[0]["experiment"] == "exp:0.01"
    assert runner_calls[0]["options"].image is None


def test_a_run_id_that_is_not_in_the_file_lists_the_runs(tmp_path, runner_calls):
    path = results_file(tmp_path)
    with pytest.raises(BadConfig, match=rf"{path} has no run 'r9'; runs in it: r1"):
        repeat.repeat_run(path, run_id="r9")
