"""The benchmark runner: a tiny synthetic suite end to end (interrupt, resume, reuse, a failing run),
the CLI's plan/list/errors, and the results file it writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import cli_call, run_cli

from boosting_tickets.bench.runner import run_suite
from boosting_tickets.bench.suites import load_suite
from boosting_tickets.core.errors import UserError
from boosting_tickets.report.build import regenerate
from boosting_tickets.report.results import read_results
from boosting_tickets.training import losses


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop anything printed before this call
    return cli_call(list(args), capsys)


REPO_SUITES = Path(__file__).resolve().parent.parent / "boosting_tickets" / "suites"
BROKEN_LR = 0.0123  # the 'broken' arm's lr: the patched loss turns NaN for it

SUITE = """
description = "tiny synthetic suite for the runner tests"
seeds = [0]

[compare]
allow_weak_stats = true
eps_curve = [0.2, 0.05]
eps_curve_n = 16

[run.data]
dataset = "synthetic"
train_subset = 128
val_size = 32
test_subset = 32
batch_size = 64

[run.model]
model = "small-cnn"

[run.train]
objective = "pgd"
epochs = 2
lr = 0.05
warmup_epochs = 1
warmup_lr = 0.01
train_steps = 1
train_step_size = 0.1
progress = false

[run.eval]
eval_steps = 2
eval_batch_size = 64

[find.train]
epochs = 1

[find.eval]
test_eval = false

[[arms]]
name = "dense"
kind = "dense"

[[arms]]
name = "ticket-natural"
kind = "ticket"

[[arms]]
name = "reinit"
kind = "reinit"
ticket_of = "ticket-natural"
"""

BROKEN_ARM = f"""
[[arms]]
name = "broken"
kind = "dense"
label = "diverges on purpose"
run.train.lr = {BROKEN_LR}
"""


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    """Run the suite (with a failing arm) once: interrupted in the dense run, then resumed."""
    root = tmp_path_factory.mktemp("bench")
    (root / "with_broken").mkdir()
    path = root / "with_broken" / "tiny.toml"
    path.write_text(SUITE + BROKEN_ARM)
    (root / "tiny.toml").write_text(SUITE)
    suite = load_suite(str(path))
    out = root / "out"
    mp = pytest.MonkeyPatch()
    for name in ("natural_loss", "adversarial_loss"):
        real = getattr(losses, name)

        def nan_for_broken(model, x, y, real=real, **kw):
            loss, logits = real(model, x, y, **kw)
            return (loss * float("nan") if kw["cfg"].train.lr == BROKEN_LR else loss), logits

        mp.setattr(losses, name, nan_for_broken)

    def interrupt(msg: str) -> None:
        if msg.startswith("epoch 2/2"):  # the dense run: epoch 1 is saved, epoch 2 is not
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, out=out, log=interrupt, progress=False)
    assert not (out / "results.json").exists()
    logs: list[str] = []
    report = run_suite(suite, out=out, log=logs.append, progress=False)
    again: list[str] = []
    report2 = run_suite(suite, out=out, log=again.append, progress=False)
    mp.undo()
    return {
        "root": root,
        "out": out,
        "report": report,
        "report2": report2,
        "logs": logs,
        "again": again,
        "suite": suite,
    }


def test_interrupted_run_resumes(bench_dir):
    assert any("resuming after epoch 1" in m for m in bench_dir["logs"])
    dense = [r for r in bench_dir["report"].rows if r["arm"] == "dense"][0]
    assert [c["epoch"] for c in dense["curve"]] == [1, 2]


def test_results_file(bench_dir):
    doc = read_results(bench_dir["out"] / "results.json")
    assert doc["suite"] == "tiny" and doc["status"] == "complete-with-failures"
    rows = {r["arm"]: r for r in doc["rows"]}
    assert set(rows) == {"dense", "ticket-natural", "reinit"}  # the failed run is not a row
    assert doc["failed"] == [
        {
            "arm": "broken",
            "seed": 0,
            "stage": "train",
            "error": doc["failed"][0]["error"],
        }
    ]
    assert "training diverged" in doc["failed"][0]["error"]
    p = doc["protocol"]
    assert (p["pgd_steps"], p["dataset"], p["n_examples"], p["split"]) == (
        2,
        "synthetic",
        32,
        "test",
    )
    assert doc["environment"]["packages"]["torch"]
    # Finding and (re)training times are kept apart.
    assert rows["dense"]["find_train_seconds"] is None
    t, r = rows["ticket-natural"], rows["reinit"]
    assert t["find_train_seconds"] > 0 and t["ticket_dir"] == r["ticket_dir"]
    assert t["kind"] == "ticket" and r["kind"] == "reinit" and r["control"] == "reinit"
    assert t["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert t["nonzero_params"] < 0.3 * t["params"] and rows["dense"]["params"] == t["params"]
    conv = t["convergence"]
    # The default target: dense's held-out PGD over its last quarter of epochs (here 1 of 2).
    assert doc["compare"]["rule"] == "baseline-plateau" and doc["compare"]["heldout_n"] > 0
    plateau = rows["dense"]["curve"][-1]["val_pgd"]
    assert conv["target"] == pytest.approx(plateau) and t["baseline"] == "dense"
    assert rows["dense"]["convergence"]["target"] == conv["target"]
    # Work: every epoch row carries it; a ticket's includes its finding.
    assert t["curve"][0]["work_flops"] > 0 and t["find_work_flops"] > 0
    assert rows["dense"]["find_work_flops"] is None
    if conv["epochs_to_target"] is not None:
        reached = t["curve"][conv["epochs_to_target"] - 1]
        assert conv["total_seconds_to_target"] == pytest.approx(
            reached["cum_train_seconds"] + t["find_train_seconds"]
        )
        assert conv["work_to_target"] == pytest.approx(
            reached["cum_work_flops"] + t["find_work_flops"]
        )
    assert doc["environment"]["git_clean"] in (True, False, None)
    # The robust accuracy against eps of every selected model, on 16 test images.
    for row in doc["rows"]:
        curve = row["eps_curve"]
        assert [p["eps"] for p in curve] == [0.05, 0.2] and {p["n"] for p in curve} == {16}
        assert curve[0]["pgd_acc"] >= curve[1]["pgd_acc"]  # a larger ball fools more
        assert (bench_dir["out"] / row["run_dir"] / "eps_curve.json").is_file()
    w = doc["wall_seconds"]
    assert w["find_train_seconds"] == pytest.approx(t["find_train_seconds"])
    assert w["train_seconds"] == pytest.approx(sum(x["train_seconds"] for x in doc["rows"]))
    for row in doc["rows"]:
        assert (bench_dir["out"] / row["run_dir"] / "metrics.json").exists()
        assert 0 <= row["pgd_acc"] <= row["clean_acc"] <= 1


def test_rerun_reuses_every_finished_run(bench_dir):
    again = bench_dir["again"]
    assert sum("already complete, nothing to do" in m for m in again) == 3
    assert any("ticket already found" in m for m in again)
    assert not any(m.startswith("epoch ") for m in again if "broken" not in m)
    strip = ("run_seconds",)
    a = [{k: v for k, v in r.items() if k not in strip} for r in bench_dir["report"].rows]
    b = [{k: v for k, v in r.items() if k not in strip} for r in bench_dir["report2"].rows]
    assert a == b
    assert [f.planned.arm.name for f in bench_dir["report2"].failures] == ["broken"]


def test_cli_reuses_runs_and_tables_read_them(bench_dir):
    root, out = bench_dir["root"], bench_dir["out"]
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    proc = run_cli("bench", "run", str(root / "tiny.toml"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    # Once more: nothing changed, so results.json is not rewritten (a finished suite's folder
    # may be read-only).
    results_mtime = (out / "results.json").stat().st_mtime_ns
    again = run_cli("bench", "run", str(root / "tiny.toml"), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert (out / "results.json").stat().st_mtime_ns == results_mtime
    assert "| ticket-natural | 0    | complete |" in proc.stdout
    after = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    assert after == before  # nothing retrained, nothing rewritten
    report = regenerate(out, root / "results", with_figures=False)
    arms = [r[1] for r in report.tables["summary"].rows]
    assert arms == ["dense", "ticket-natural", "reinit"]
    assert {r[1] for r in report.tables["paired"].rows} == {"ticket-natural", "reinit"}
    readme = (root / "results" / "README.md").read_text()
    # Whatever the tiny runs measured, the README states a computed verdict for the ticket.
    assert re.search(
        r"ticket-natural\*\* vs dense \(.*\): work: (\*\*)?(faster|slower|inconclusive|no verdict)",
        readme,
    )


def test_out_dir_of_another_suite_is_refused(bench_dir, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(SUITE)
    with pytest.raises(UserError, match="holds results of suite 'tiny', not 'other'"):
        run_suite(load_suite(str(other)), out=bench_dir["out"], progress=False)


def test_dry_run_prints_plan_and_cost_without_running(tmp_path, capsys):
    code, text, err = cli(
        capsys, "bench", "run", "paper-wrn34-10", "--dry-run", "--out", str(tmp_path / "o")
    )
    assert code == 0, err
    assert "| 2 | ticket-fgsm-40 " in text and "fgsm 50 ep lr 0.05" in text
    assert "wrn-34-10 13.32 GFLOP/image" in text
    assert "vs published 134,764 s" in text and "vs published 69,552 s" in text
    assert not (tmp_path / "o").exists()
    code, text, _ = cli(capsys, "bench", "run", "paper-vgg16", "--dry-run", "--seeds", "2")
    assert code == 0 and "seeds: 0, 1; 8 runs" in text
    assert "dense-weak" in text


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["bench", "run", "no-such-suite"], "unknown suite 'no-such-suite'; known suites:"),
        (["bench", "run", "quick", "--seeds", "0", "--dry-run"], "--seeds must be >= 1"),
        (
            ["bench", "run", "quick", "--seeds", "two", "--dry-run"],
            "--seeds expects int",
        ),
    ],
)
def test_cli_errors_are_one_line(args, fragment, capsys):
    code, _, err = cli(capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert fragment in err


def test_weak_statistics_are_refused_at_planning_time_unless_allowed(tmp_path, capsys):
    out = str(tmp_path / "o")
    # 2 seeds: refused before anything is written, and the line says how to go on.
    code, _, err = cli(capsys, "bench", "run", "sweep-capacity", "--out", out)
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "o").exists()
    assert "runs 2 seed(s); intervals and verdicts need at least 3" in err
    assert "--allow-weak-stats" in err
    # A fixed target at chance (10 classes, 300 held-out images: floor 13.5%).
    weak = tmp_path / "chance.toml"
    text = (
        (REPO_SUITES / "quick.toml")
        .read_text()
        .replace('target = "baseline-plateau"', "target = 0.12")
    )
    weak.write_text(text)
    code, _, err = cli(capsys, "bench", "run", str(weak), "--out", out)
    assert code == 2 and "at or below chance + 2 SE of its 300 held-out images (0.135)" in err
    # A dry run plans it with the warning; --allow-weak-stats would run it with the warning.
    code, text, err = cli(capsys, "bench", "run", "sweep-capacity", "--dry-run")
    assert code == 0 and "warning: suite sweep-capacity runs 2 seed(s)" in text


def test_bench_list_shows_every_suite(capsys):
    code, out, err = cli(capsys, "bench", "list")
    assert code == 0, err
    for name in ("quick", "paper-vgg16", "paper-wrn34-10", "fgsm-overfitting", "sweep-capacity"):
        assert f"| {name} " in out
    assert "invalid" not in out


def test_suite_errors_name_the_arm_via_cli(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(SUITE.replace('kind = "reinit"', 'kind = "reinnit"'))
    code, _, err = cli(capsys, "bench", "run", str(bad), "--dry-run")
    assert code == 2
    assert "arm 'reinit' has unknown kind 'reinnit'" in err
