"""RuntimeOptions: one value for where and how a server runs, taken by RemoteRunner as by sweeps."""

from __future__ import annotations

import pytest

from dacbench_remote import RemoteRunner
from dacbench_remote.config import CONTAINER_RUNTIMES, RUNTIME_NAMES
from dacbench_remote.errors import BadConfig
from dacbench_remote.runtimes.options import RuntimeOptions
from dacbench_remote.sweeps.trial import Trial


def test_the_runner_takes_every_runtime_setting_from_options(tmp_path):
    options = RuntimeOptions(kind="local", python="/usr/bin/python3", env={"A": "1"},
                             startup_timeout=7.0, call_timeout=9.0)
    runner = RemoteRunner("gymnasium:CartPole-v1", options=options, results_path=None)
    assert (runner.runtime_spec, runner.python, runner.env) == ("local", "/usr/bin/python3",
                                                                 {"A": "1"})
    assert (runner.startup_timeout, runner.call_timeout) == (7.0, 9.0)


def test_every_runtime_option_is_a_runner_keyword_with_the_same_default():
    import dataclasses
    import inspect

    from dacbench_remote.host.runner import _RUNTIME_KEYWORDS

    fields = {f.name: f for f in dataclasses.fields(RuntimeOptions)}
    assert set(_RUNTIME_KEYWORDS.values()) == set(fields) - {"provenance"}
    parameters = inspect.signature(RemoteRunner.__init__).parameters
    for keyword, option in _RUNTIME_KEYWORDS.items():
        if keyword in ("runtime", "env"):  # None: the config's default_runtime / no variables
            assert parameters[keyword].default is None
            continue
        assert parameters[keyword].default == fields[option].default, keyword


def test_options_and_the_same_keywords_together_are_refused():
    with pytest.raises(BadConfig, match=r"either in options= or as keywords.*: call_timeout, "
                                        r"runtime given with options="):
        RemoteRunner("gymnasium:CartPole-v1", runtime="local", call_timeout=1.0,
                     options=RuntimeOptions(kind="local"))


def test_a_verified_image_is_recorded_from_options_without_hashing_it(tmp_path):
    image = tmp_path / "never-read.sif"  # does not exist: hashing it would fail
    options = RuntimeOptions(kind="bwrap", image=str(image),
                             provenance={"sha256": "ab" * 32, "origin": "downloaded"})
    runner = RemoteRunner("Luby", options=options, results_path=None)
    record = runner.provenance(0, "run", "random")
    assert record["image_sha256"] == "ab" * 32 and record["image_origin"] == "downloaded"


def test_one_list_of_runtime_names_and_one_options_type():
    assert set(CONTAINER_RUNTIMES) < set(RUNTIME_NAMES) and "local" not in CONTAINER_RUNTIMES
    assert type(Trial("Luby", "random", 0, 1).runtime) is RuntimeOptions
    plain, fetched = RuntimeOptions(kind="bwrap"), RuntimeOptions(kind="bwrap",
                                                                  provenance={"sha256": "x"})
    assert plain.key() == fetched.key() != RuntimeOptions(kind="local").key()
