"""`dacbench-remote list` shows each experiment version's DACBench, numpy and gymnasium versions."""

from __future__ import annotations

from pathlib import Path

from dacbench_remote.cli import main


def listing(capsys, monkeypatch, tmp_path) -> dict[tuple[str, str], list[str]]:
    monkeypatch.setenv("DACBENCH_REMOTE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DACBENCH_REMOTE_CATALOG", raising=False)
    (tmp_path / "config.toml").write_text("")
    monkeypatch.setenv("DACBENCH_REMOTE_CONFIG", str(tmp_path / "config.toml"))
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[4:7] == ["dacbench", "numpy", "gymnasium"]
    tables = "\n".join(lines).split("\n\n")
    rows = [line.split() for line in tables[0].splitlines()[2:]]
    if len(tables) > 1:  # the agent images, after an empty line and their own title
        agent_lines = tables[1].splitlines()
        assert agent_lines[1].split()[4:7] == ["stable-baselines3", "torch", "gymnasium"]
        rows += [line.split() for line in agent_lines[3:]]
    return {(row[0], row[1]): row for row in rows}


def test_list_reads_the_versions_from_each_versions_recipe(capsys, monkeypatch, tmp_path):
    rows = listing(capsys, monkeypatch, tmp_path)
    # exp:dacbench-0.3.0 has no default mark, so its row has one column fewer.
    assert rows[("Luby", "exp:dacbench-0.3.0")][3:6] == ["0.3.0", "1.26.4", "0.29.1"]
    assert rows[("Luby", "exp:0.01")][4:7] == ["0.5.6", "2.4.6", "1.4.0"]
    assert rows[("CMAES", "exp:0.01")][4:7] == ["0.5.6", "2.4.6", "1.4.0"]
    assert rows[("Theory", "exp:0.01")][4:7] == ["0.5.6", "2.4.6", "1.4.0"]


def test_list_shows_the_agent_images_with_their_stack(capsys, monkeypatch, tmp_path):
    rows = listing(capsys, monkeypatch, tmp_path)
    agents = rows[("PPO,A2C,DQN,SAC,TD3,DDPG", "exp:0.01")]
    assert agents[2:7] == ["yes", "agent-sb3", "2.9.2", "2.13.0+cpu", "1.4.0"]
    assert agents[7] == "build,pinned"
    assert not any(key[0] == "PPO" for key in rows)  # agents are no benchmarks


def test_list_says_where_each_image_comes_from(capsys, monkeypatch, tmp_path):
    # The packaged versions list no source: their images are built and checked against the pin.
    rows = listing(capsys, monkeypatch, tmp_path)
    assert rows[("Luby", "exp:0.01")][7] == "build,pinned"
    assert rows[("Luby", "exp:dacbench-0.3.0")][6] == "build,pinned"  # no "default" column


def test_image_origin_names_the_source_or_the_build():
    from dataclasses import replace
    from pathlib import Path

    from dacbench_remote.cli.commands import image_origin
    from dacbench_remote.images.catalog import ImageVersion

    version = ImageVersion("exp:1", "x.sif", "ab" * 32, (), True, "0.5.6", Path("c.toml"))
    assert image_origin(version) == "build,pinned"
    assert image_origin(replace(version, sha256="")) == "build,unpinned"
    sources = ("oras://ghcr.io/org/x:1", "https://example.invalid/x.sif")
    assert image_origin(replace(version, sources=sources)) == "oras://ghcr.io+1"
    assert image_origin(replace(version, sources=("/srv/images/x.sif",))) == "file:x.sif"


def test_a_cached_image_built_here_says_so(tmp_path):
    import json

    from dacbench_remote.cli.commands import _cached_entry
    from dacbench_remote.images.cache import ImageCache

    cache = ImageCache(tmp_path)
    downloaded, built, reproduced = (tmp_path / f"{name}.sif" for name in ("d", "b", "r"))
    records = {downloaded: {"origin": "https://example.invalid/d.sif"},
               built: {"origin": "built-locally", "reproduces_pin": False},
               reproduced: {"origin": "built-locally", "reproduces_pin": True}}
    for path, record in records.items():
        path.write_bytes(b"sif")
        Path(f"{path}.json").write_text(json.dumps({"image": path.name, "sha256": "", **record}))
    assert _cached_entry(cache, downloaded) == str(downloaded)
    assert _cached_entry(cache, built) == f"{built} (built locally)"
    assert _cached_entry(cache, reproduced) == f"{reproduced} (built locally, reproducing the pin)"
    assert _cached_entry(cache, None) == "-"


def test_pull_takes_an_agents_name_to_its_agent_image(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("DACBENCH_REMOTE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DACBENCH_REMOTE_CATALOG", raising=False)
    (tmp_path / "config.toml").write_text("")
    monkeypatch.setenv("DACBENCH_REMOTE_CONFIG", str(tmp_path / "config.toml"))
    assert main(["pull", "PPO@exp:0.01"]) == 1  # not cached, no source, building not asked for
    error = capsys.readouterr().err
    assert "agent-sb3-0.01.sif (PPO exp:0.01) is not in the cache" in error
    assert "agent-sb3.def with --build" in error
