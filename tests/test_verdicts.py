"""The speed verdict rules on hand-built histories: targets that favour no arm, targets at chance,
overlapping intervals, one and two seeds, work faster while wall-clock is inconclusive, and results
from a dirty tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from boosting_tickets.report.build import regenerate
from boosting_tickets.report.compare import speed_verdict
from boosting_tickets.report.results import write_results
from boosting_tickets.report.targets import build_target, chance_floor, with_convergence

WORK = 1e12  # FLOPs per epoch, every arm (an unstructured ticket does the dense network's work)
PROTOCOL = {
    "threat_model": "Linf", "eps": 0.1, "pgd_steps": 20, "step_size": 0.025, "restarts": 1,
    "random_start": True, "bn_mode": "eval", "n_examples": 1000, "dataset": "synthetic",
}  # fmt: skip


def curve(pgd: list[float], seconds: list[float]) -> list[dict]:
    out, cum_s, cum_w = [], 0.0, 0.0
    for e, (p, s) in enumerate(zip(pgd, seconds, strict=True), 1):
        cum_s, cum_w = cum_s + s, cum_w + WORK
        out.append({"epoch": e, "val_pgd": p, "val_clean": p + 0.2, "train_seconds": s,
                    "cum_train_seconds": cum_s, "work_flops": WORK, "cum_work_flops": cum_w})  # fmt: skip
    return out


def row(arm: str, seed: int, pgd: list[float], seconds: list[float], *, find: float = 0.0) -> dict:
    ticket = arm != "dense"
    return {
        "arm": arm, "kind": "ticket" if ticket else "dense", "source": "measured", "seed": seed,
        "dataset": "synthetic", "model": "wrn-10-1", "params": 100, "nonzero_params": 20,
        "n": 1000, "clean_acc": 0.6, "fgsm_acc": 0.45, "pgd_acc": max(pgd),
        "baseline": "dense" if ticket else None, "status": "complete",
        "find_train_seconds": 2.0 if ticket else None,
        "find_work_flops": find if ticket else None,
        "curve": curve(pgd, seconds),
    }  # fmt: skip


DENSE = [0.20, 0.30, 0.40, 0.42, 0.41]  # plateau (last 2 epochs): 0.415
TICKET = [0.35, 0.42, 0.43, 0.43, 0.44]  # reaches 0.415 at epoch 2


def write(tmp: Path, rows: list[dict], *, compare: dict | None = None, commit: str = "abc") -> Path:
    path = tmp / "in" / "results.json"
    compare = {"baseline": "dense", "target": None, "target_fraction": 1.0,
               "rule": "baseline-plateau", "target_window": 2,
               "chance_floor": chance_floor(10, 500), **(compare or {})}  # fmt: skip
    write_results(path, suite="hand", protocol=PROTOCOL, rows=rows, compare=compare,
                  environment={"git_commit": commit, "git_clean": not commit.endswith("+dirty")})  # fmt: skip
    return path.parent


def verdicts(tmp: Path, rows: list[dict], **kw) -> tuple:
    report = regenerate(write(tmp, rows, **kw), tmp / "out", with_figures=False)
    paired = {r[1]: r for r in report.tables["paired"].rows}
    return paired, report


def test_the_plateau_target_does_not_favour_the_baseline():
    rows = [row("dense", s, DENSE, [10] * 5) for s in range(3)]
    plateau = {"rule": "baseline-plateau", "target_window": 2}
    t = build_target(plateau, "dense", rows, floor=0.1)
    assert t.value == pytest.approx(0.415) and t.window == 2 and t.seeds == (0, 1, 2)
    judged, records = with_convergence(plateau, rows, floor=0.1)
    assert records["dense"]["rule"] == "baseline-plateau"
    # dense reaches its plateau at epoch 4, not at its own best epoch by construction
    assert {r["convergence"]["epochs_to_target"] for r in judged} == {4}
    best = build_target({"rule": "baseline-best"}, "dense", rows, floor=0.1)
    assert best.for_seed(0) == pytest.approx(0.42)


def test_three_seeds_work_faster_but_wall_clock_inconclusive(tmp_path):
    # The ticket reaches the target 2 epochs sooner (2 vs 4 epochs of work, +0.5 of finding) in
    # every seed; its wall-clock seconds are noise around the dense ones.
    dense = [row("dense", s, DENSE, sec) for s, sec in enumerate([[10] * 5, [30] * 5, [12] * 5])]
    ticket = [row("t", s, TICKET, sec, find=0.5 * WORK)
              for s, sec in enumerate([[25] * 5, [8] * 5, [30] * 5])]  # fmt: skip
    paired, report = verdicts(tmp_path, dense + ticket)
    assert paired["t"][8] == "faster"  # work verdict
    assert paired["t"][10] == "inconclusive"  # wall-clock verdict
    assert paired["t"][7].startswith("-1.500")  # Δ work TFLOP: (2 + 0.5) - 4
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "work: **faster**" in readme and "wall-clock: **inconclusive**" in readme
    assert "the 95% interval includes zero" in readme


def test_overlapping_intervals_are_inconclusive():
    v, paired = speed_verdict({0: 3.0, 1: 5.0, 2: 2.0}, {0: 4.0, 1: 3.0, 2: 4.0}, above_chance=True)
    assert v.verdict == "inconclusive" and "includes zero" in v.reason
    assert paired.diff.low < 0 < paired.diff.high
    v, _ = speed_verdict({0: 6.0, 1: 7.0, 2: 6.5}, {0: 4.0, 1: 4.5, 2: 4.2}, above_chance=True)
    assert v.verdict == "slower"


@pytest.mark.parametrize("seeds", [1, 2])
def test_one_or_two_seeds_give_values_and_no_verdict(tmp_path, seeds):
    dense = [row("dense", s, DENSE, [10] * 5) for s in range(seeds)]
    ticket = [row("t", s, TICKET, [9] * 5) for s in range(seeds)]
    paired, report = verdicts(tmp_path, dense + ticket)
    assert paired["t"][8] == "inconclusive" and paired["t"][10] == "inconclusive"
    assert "(no interval)" in paired["t"][7] and "±" not in paired["t"][7]
    readme = (tmp_path / "out" / "README.md").read_text()
    assert f"{seeds} paired seed(s): no interval" in readme
    assert f"t: {seeds} seed(s), fewer than the 3 an interval needs" in readme


def test_a_target_at_chance_gives_a_warning_and_no_verdict(tmp_path):
    # 10 classes, 500 held-out images: chance + 2 SE = 12.7%; the dense plateau is 11%.
    low = [0.05, 0.08, 0.10, 0.11, 0.11]
    dense = [row("dense", s, low, [10] * 5) for s in range(3)]
    ticket = [row("t", s, [0.2] * 5, [5] * 5) for s in range(3)]
    paired, report = verdicts(tmp_path, dense + ticket)
    assert paired["t"][8] == "no verdict" and paired["t"][10] == "no verdict"
    assert any("at or below chance + 2 SE" in w for w in report.warnings)
    conv = {r[1]: r for r in report.tables["convergence"].rows}
    assert "(≤ chance + 2 SE)" in conv["t"][3]


def test_never_reaching_in_every_seed_is_slower():
    v, _ = speed_verdict({0: None, 1: None, 2: None}, {0: 4.0, 1: 3.0, 2: 4.0}, above_chance=True)
    assert v.verdict == "slower" and "never reached" in v.reason
    v, _ = speed_verdict({0: 2.0, 1: None, 2: 2.0}, {0: 4.0, 1: 3.0, 2: 4.0}, above_chance=True)
    assert v.verdict == "inconclusive" and "missed the target in 1 of the 3 seed(s)" in v.reason


def test_results_from_a_dirty_tree_are_marked(tmp_path):
    rows = [row("dense", s, DENSE, [10] * 5) for s in range(3)]
    rows += [row("t", s, TICKET, [10] * 5) for s in range(3)]
    _, report = verdicts(tmp_path, rows, commit="abc+dirty")
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "| abc+dirty  | dirty |" in readme
    assert "*(from a dirty tree: not reproducible from a commit)*" in readme
    assert any("dirty tree" in w for w in report.warnings)


def test_same_work_per_epoch_but_epoch_times_apart_warns(tmp_path):
    rows = [row("dense", s, DENSE, [30] * 5) for s in range(3)]
    rows += [row("t", s, TICKET, [10] * 5) for s in range(3)]
    _, report = verdicts(tmp_path, rows)
    assert any("median epoch times differ 3.00x" in w for w in report.warnings)
