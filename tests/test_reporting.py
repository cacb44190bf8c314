"""Tables, figures and README regenerated from raw results: byte-identical output for a fixture,
protocol checks, rows from other producers, published reference rows and truthful verdicts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import run_cli

from boosting_tickets.core.errors import UserError
from boosting_tickets.report.build import regenerate
from boosting_tickets.report.formats import csv_text, fmt_interval, latex_escape
from boosting_tickets.report.results import read_results, write_results
from boosting_tickets.report.stats import mean_ci

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_tables_from_the_fixture_are_byte_identical(tmp_path):
    """Regenerate with: boosting-tickets tables tests/fixtures/results --out tests/fixtures/expected
    --no-figures (only after an intended change of the rendering)."""
    out = tmp_path / "results"
    proc = run_cli("tables", "tests/fixtures/results", "--out", str(out), "--no-figures", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    expected = _files(FIXTURES / "expected")
    assert set(expected) == {
        "README.md",
        *(
            f"tables/{t}.{ext}"
            for t in ("summary", "convergence", "paired", "per_seed", "per_class", "published")
            for ext in ("md", "csv", "tex")
        ),
    }
    got = _files(out)
    assert set(got) == set(expected)
    for name, data in expected.items():
        assert got[name] == data, f"{name} differs from tests/fixtures/expected/{name}"
    # The console shows the comparison table and the computed verdicts.
    assert "| fixture-mini | ticket-natural |" in proc.stdout
    assert "wall-clock: inconclusive, -4 (no interval) s (2 paired seed(s): no interval)" in (
        proc.stdout
    )
    assert "reinit vs dense (1 of 2 seeds reached the target)" in proc.stdout


def test_readme_is_truthful_to_the_fixture():
    readme = (FIXTURES / "expected" / "README.md").read_text()
    # ticket-natural: -5 s (seed 0) and -2 s (seed 1): two seeds give no interval, no verdict.
    assert "**fixture-mini / ticket-natural** vs dense (2 of 2 seeds reached the target)" in readme
    assert "wall-clock: **inconclusive**, -4 (no interval) s (2 paired seed(s): no interval)" in (
        readme
    )
    # The fixture predates work accounting: no work verdict, and it says why.
    assert "work: no verdict (no work recorded: results written before work was)" in readme
    # ticket-fgsm has one seed (seed 1 failed): the per-seed value, no interval.
    assert "+18 (no interval) s" in readme
    assert "seed 1 failed (find) and is not tabulated" in readme
    assert "ticket-fgsm: 1 seed(s), fewer than the 3 an interval needs" in readme
    summary = (FIXTURES / "expected" / "tables" / "summary.md").read_text()
    assert "| ticket-fgsm    | ticket found by FGSM training    | ticket | measured | 1 " in summary


def test_figures_are_pngs_indexed_by_the_readme(tmp_path):
    report = regenerate(FIXTURES / "results", tmp_path)
    pngs = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert pngs == [
        "fixture-mini_epoch1.png",
        "fixture-mini_pgd_vs_epoch.png",
        "fixture-mini_pgd_vs_work.png",
    ]
    for name in pngs:
        assert (tmp_path / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{name}" in (tmp_path / "README.md").read_text()
    assert "tables/summary.tex" in report.files


def _doc(tmp: Path, name: str, rows, **protocol_changes):
    base = read_results(FIXTURES / "results" / "fixture-mini" / "results.json")
    protocol = {**base["protocol"], **protocol_changes}
    path = tmp / name / "results.json"
    write_results(path, suite=name, protocol=protocol, rows=rows, environment=base["environment"])
    return path


def _zoo_row(arm: str, pgd: float, params: int):
    return {
        "arm": arm,
        "kind": "zoo",
        "source": "measured",
        "seed": None,
        "dataset": "synthetic",
        "model": "wrn-28-10",
        "params": params,
        "nonzero_params": params // 10,
        "clean_acc": 0.9,
        "fgsm_acc": 0.6,
        "pgd_acc": pgd,
        "autoattack_acc": pgd - 0.01,
    }


def test_protocol_mismatch_is_refused_naming_fields_and_writes_nothing(tmp_path):
    src = tmp_path / "in"
    shutil.copytree(FIXTURES / "results", src)
    _doc(src, "other", [_zoo_row("zoo:A", 0.5, 1000)], eps=0.2, n_examples=10)
    out = tmp_path / "out"
    with pytest.raises(UserError) as info:
        regenerate(src, out)
    msg = str(info.value)
    assert "fields: eps, n_examples" in msg and "--mix-protocols" in msg and "\n" not in msg
    assert not out.exists()
    report = regenerate(src, out, mix_protocols=True, with_figures=False)
    assert report.tables["summary"].headers[-1] == "protocol"
    assert any("Linf 0.2" in r[-1] for r in report.tables["summary"].rows)


def test_rows_from_other_producers_join_the_tables(tmp_path):
    src = tmp_path / "in"
    shutil.copytree(FIXTURES / "results", src)
    _doc(src, "robustbench-compare", [_zoo_row("zoo:Carmon2019", 0.55, 36479194)])
    report = regenerate(src, tmp_path / "out", with_figures=False)
    zoo = [r for r in report.tables["summary"].rows if r[1] == "zoo:Carmon2019"]
    assert len(zoo) == 1
    suite, arm, _, kind, source, seeds, params, nonzero = zoo[0][:8]
    assert (suite, kind, source, seeds) == ("robustbench-compare", "zoo", "measured", "–")
    assert (params, nonzero) == ("36479194", "3647919")
    assert "AutoAttack %" in report.tables["summary"].headers
    assert "zoo:Carmon2019" not in {r[1] for r in report.tables["paired"].rows}


def _measured(arm, kind, seed, pgd, **extra):
    return {
        "arm": arm,
        "kind": kind,
        "source": "measured",
        "seed": seed,
        "dataset": "cifar10",
        "model": "wrn-34-10",
        "params": 46160474,
        "nonzero_params": 46160474,
        "clean_acc": 0.85,
        "fgsm_acc": 0.55,
        "pgd_acc": pgd,
        **extra,
    }


def test_published_rows_appear_only_under_their_protocol(tmp_path):
    table3 = {"eps": 8 / 255, "pgd_steps": 20, "step_size": 2 / 255, "n_examples": 10000}
    rows = [_measured("dense", "dense", 0, 0.49)]
    base = read_results(FIXTURES / "results" / "fixture-mini" / "results.json")
    path = tmp_path / "match" / "results.json"
    write_results(
        path,
        suite="paper-wrn34-10",
        protocol={**base["protocol"], **table3, "dataset": "cifar10"},
        rows=rows,
        environment={},
        reference=["li2020-table3"],
    )
    report = regenerate(tmp_path / "match", tmp_path / "out", with_figures=False)
    # Published rows sit in their own table, with their protocol differences, never in the
    # summary's like-for-like columns.
    assert not [r for r in report.tables["summary"].rows if r[4] == "published"]
    ref = {r[1]: r for r in report.tables["published"].rows}
    assert set(ref) == {
        "paper:dense",
        "paper:ticket-fgsm@40ep",
        "paper:ticket-fgsm@70ep",
        "paper:ticket-fgsm@100ep",
    }
    assert ref["paper:dense"][6] == "50.07" and ref["paper:dense"][7] == "134764"
    diffs = ref["paper:dense"][-1]
    assert "final epoch" in diffs and "random start" in diffs and "test set" in diffs
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "4 published row(s)" in readme

    # 500 test images instead of the paper's 10,000: no published rows, and the README says why.
    write_results(
        path,
        suite="paper-wrn34-10",
        protocol={**base["protocol"], **table3, "n_examples": 500},
        rows=rows,
        environment={},
        reference=["li2020-table3"],
    )
    report = regenerate(tmp_path / "match", tmp_path / "out2", with_figures=False)
    assert not report.tables["published"].rows
    readme = (tmp_path / "out2" / "README.md").read_text()
    assert "Table 3 is not shown: protocol differs" in readme


def test_missing_or_empty_results_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        regenerate(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.json").write_text("{}")
    with pytest.raises(UserError, match="no results files or finished runs under"):
        regenerate(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cell_formats():
    assert fmt_interval(mean_ci([0.4, 0.5, 0.6]), pct=True) == "50.00 ± 24.84"
    assert fmt_interval(mean_ci([0.5]), pct=True) == "50.00"
    assert fmt_interval(mean_ci([0.4, 0.5]), pct=True) == "40.00, 50.00 (no interval)"
    assert fmt_interval(mean_ci([]), pct=True) == "–"
    assert latex_escape("a_b 5% & ± – #1 {x}") == r"a\_b 5\% \& $\pm$ -- \#1 \{x\}"
    assert csv_text(["a", "b"], [[None, 0.1234567891], [3, "x,y"]]) == 'a,b\n,0.123457\n3,"x,y"\n'


def test_committed_results_are_what_tables_makes_of_the_raw_files(tmp_path, monkeypatch):
    # results/ must stay true to the code: `boosting-tickets tables results/raw --out results`
    # (and results/<study>/raw --out results/<study>, every committed study) regenerates every
    # committed table and README byte for byte.
    monkeypatch.chdir(REPO)
    pairs = [("results/raw", "results")] + [
        (f"results/{d.name}/raw", f"results/{d.name}")
        for d in sorted((REPO / "results").iterdir())
        if (d / "raw").is_dir()
    ]  # the quick suite, then every study under results/<study>/
    for raw, out in pairs:
        if not (REPO / raw).is_dir():
            continue
        report = regenerate(raw, tmp_path / out)
        for rel, data in sorted(report.files.items()):
            committed = REPO / out / rel
            assert committed.is_file(), f"{out}/{rel} is not committed"
            if rel.endswith(".png"):
                assert committed.read_bytes()[:8] == data[:8] == b"\x89PNG\r\n\x1a\n"
            else:
                assert committed.read_text() == data, f"{out}/{rel} differs from its regeneration"
