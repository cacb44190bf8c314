"""Run hashes survive the restructure: the code before it (commit fb270ff) made the fixture in
tests/fixtures/legacy/, and today's code must name every run the same and reuse those directories
without training anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import tree_digest

from boosting_tickets.bench.plan import plan_suite
from boosting_tickets.bench.runner import run_suite
from boosting_tickets.bench.suites import load_suite
from boosting_tickets.core.config import build_config, config_hash
from boosting_tickets.tickets.config import FindConfig
from boosting_tickets.tickets.finding import find_ticket
from boosting_tickets.tickets.retrain import retrain_ticket
from boosting_tickets.tickets.ticket import ticket_dir_for
from boosting_tickets.training import run as training_run
from boosting_tickets.training.hparams import RunConfig
from boosting_tickets.training.run import run_dir_for, train
from boosting_tickets.zoo.config import CompareConfig

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"
HASHES = json.loads((LEGACY / "hashes.json").read_text())


@pytest.mark.parametrize("name", sorted(HASHES["suites"]))
def test_every_packaged_suite_plans_the_same_directories(name: str) -> None:
    got = [
        {
            "arm": p.arm.name,
            "seed": p.seed,
            "kind": p.arm.kind,
            "run_hash": config_hash(p.run),
            "train_dir": run_dir_for(p.run, "root").name,
            "ticket_dir": None if p.find is None else ticket_dir_for(p.find, "root").name,
        }
        for p in plan_suite(load_suite(name))
    ]
    want = HASHES["suites"][name]
    # Every run planned before keeps its directory; a suite that gained seeds (quick: 2 -> 3)
    # only adds runs of the new seeds.
    assert got[: len(want)] == want
    old_seeds = {w["seed"] for w in want}
    assert all(g["seed"] not in old_seeds for g in got[len(want) :])


@pytest.mark.parametrize("case", HASHES["configs"], ids=lambda c: f"{c['class']}-{c['hash']}")
def test_command_lines_hash_the_same(case: dict) -> None:
    cls = {"RunConfig": RunConfig, "FindConfig": FindConfig, "CompareConfig": CompareConfig}
    cfg = build_config(cls[case["class"]], config_path=None, cli_values=case["cli_values"])
    assert config_hash(cfg) == case["hash"]


@pytest.fixture
def legacy_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the legacy suite output; training anything in it fails the test."""

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a run the old code finished was trained again")

    monkeypatch.setattr(training_run, "fit", no_training)
    out = tmp_path / "bench"
    shutil.copytree(LEGACY / "bench", out)
    return out


def test_bench_run_reuses_every_legacy_run(legacy_out: Path) -> None:
    before = tree_digest(legacy_out)
    old = json.loads((legacy_out / "results.json").read_text())
    report = run_suite(load_suite(LEGACY / "legacy-mini.toml"), out=legacy_out, progress=False)
    assert not report.failures
    # Same runs, same numbers: every field the legacy rows had is unchanged, except the
    # convergence summary, which the current target rule recomputes (docs/speed.md).
    assert len(report.rows) == len(old["rows"])
    for new, was in zip(report.rows, old["rows"], strict=True):
        for key, value in was.items():
            if key == "convergence":
                continue
            if key == "curve":
                assert [
                    {k: c[k] for k in w} for c, w in zip(new["curve"], value, strict=True)
                ] == value
                continue
            assert new[key] == value, key
    after = tree_digest(legacy_out)
    assert {k: v for k, v in after.items() if k != "results.json"} == {
        k: v for k, v in before.items() if k != "results.json"
    }


def test_train_find_and_retrain_find_the_legacy_directories(legacy_out: Path) -> None:
    suite = load_suite(LEGACY / "legacy-mini.toml")
    dense, ticket_arm, reinit = plan_suite(suite)
    before = tree_digest(legacy_out)
    run = train(dense.run, run_dir_for(dense.run, legacy_out / "runs"))
    assert run.status == "complete" and run.run_dir.name == "train_f5c9bfae70"
    ticket = find_ticket(ticket_arm.find, legacy_out / "tickets")
    assert ticket.dir.name == "ticket_c71d372bf2"
    again = retrain_ticket(ticket_arm.run, ticket, out=legacy_out / "runs")
    control = retrain_ticket(reinit.run, ticket, out=legacy_out / "runs", control="reinit")
    assert {again.run_dir.name, control.run_dir.name} == {
        p.name for p in (legacy_out / "runs").glob("retrain_*")
    }
    assert tree_digest(legacy_out) == before
