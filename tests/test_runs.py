"""Every run is tabulable: ``runs DIR`` lists runs, ``tables DIR`` turns standalone ones into rows."""

from __future__ import annotations

import json

from support import cli_call, small_config

from boosting_tickets.training.run import train


def test_standalone_runs_are_listed_and_tabulated(tmp_path, capsys):
    for seed in (0, 1):
        train(small_config(epochs=2, objective="pgd", seed=seed), tmp_path / "mine" / f"s{seed}")
    code, out, err = cli_call(["runs", str(tmp_path / "mine"), "--json"], capsys)
    assert code == 0, err
    listed = json.loads(out)
    assert [r["run"] for r in listed] == ["s0", "s1"]
    assert {r["kind"] for r in listed} == {"train"} and {r["status"] for r in listed} == {
        "complete"
    }
    assert [r["epochs"] for r in listed] == ["2/2", "2/2"] and [r["seed"] for r in listed] == [
        "0",
        "1",
    ]

    code, out, err = cli_call(["tables", str(tmp_path / "mine"), "--out", str(tmp_path / "r"),
                               "--no-figures"], capsys)  # fmt: skip
    assert code == 0, err
    per_seed = (tmp_path / "r" / "tables" / "per_seed.md").read_text()
    assert per_seed.count("| runs-1 ") == 2  # both seeds, one arm
    summary = (tmp_path / "r" / "tables" / "summary.md").read_text()
    row = "| runs-1 | train wrn-10-1 epochs=2 lr=0.05 | s0          | dense | measured | 2     | 77562  |"
    assert row in summary
    assert "runs-1 (standalone runs)" in (tmp_path / "r" / "README.md").read_text()


def test_runs_of_an_empty_or_missing_folder(tmp_path, capsys):
    code, out, _ = cli_call(["runs", str(tmp_path)], capsys)
    assert code == 0 and "no runs under" in out
    code, _, err = cli_call(["runs", str(tmp_path / "nope")], capsys)
    assert code == 2 and "is not a directory" in err
