"""`dacbench-remote list` shows each experiment version's DACBench, numpy and gymnasium versions."""

from __future__ import annotations

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
    rows = [line.split() for line in lines[2:]]
    return {(row[0], row[1]): row for row in rows}


def test_list_reads_the_versions_from_each_versions_recipe(capsys, monkeypatch, tmp_path):
    rows = listing(capsys, monkeypatch, tmp_path)
    # exp:dacbench-0.3.0 has no default mark, so its row has one column fewer.
    assert rows[("Luby", "exp:dacbench-0.3.0")][3:6] == ["0.3.0", "1.26.4", "0.29.1"]
    assert rows[("Luby", "exp:0.01")][4:7] == ["0.5.6", "2.4.6", "1.4.0"]
    assert rows[("CMAES", "exp:0.01")][4:7] == ["0.5.6", "2.4.6", "1.4.0"]
    assert rows[("Theory", "exp:0.01")][4:7] == ["0.5.6", "2.4.6", "1.4.0"]
