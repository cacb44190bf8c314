"""Convergence metrics on hand-made curves with hand-computed answers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boosting_tickets.report.convergence import (
    best_epoch,
    epochs_to_target,
    first_reach,
    mean_over_epochs,
    seconds_to_target,
    summarize,
)


def curve(pgd, seconds, clean=None):
    clean = clean or [min(1.0, v + 0.3) for v in pgd]
    rows, cum = [], 0.0
    for e, (p, s, c) in enumerate(zip(pgd, seconds, clean, strict=True), 1):
        cum += s
        rows.append(
            {"epoch": e, "val_pgd": p, "val_clean": c, "train_seconds": s, "cum_train_seconds": cum}
        )
    return rows


DENSE = curve([0.10, 0.30, 0.50, 0.40], [10.0, 10.0, 10.0, 10.0])
TICKET = curve([0.35, 0.52, 0.45, 0.50], [11.0] * 4, clean=[0.65, 0.75, 0.7, 0.72])


def test_hand_computed_dense_and_ticket():
    target = 0.50  # the dense baseline's best held-out PGD accuracy
    assert best_epoch(DENSE) == (3, 0.50)
    assert epochs_to_target(DENSE, target) == 3
    assert seconds_to_target(DENSE, target) == 30.0
    assert epochs_to_target(TICKET, target) == 2
    assert seconds_to_target(TICKET, target) == 22.0
    # Ticket finding took 15 s: total time = 15 + 22 = 37 s > 30 s, so the ticket is not faster.
    assert seconds_to_target(TICKET, target, offset=15.0) == 37.0
    assert mean_over_epochs(DENSE) == pytest.approx((0.10 + 0.30 + 0.50 + 0.40) / 4)
    assert mean_over_epochs(TICKET) == pytest.approx((0.35 + 0.52 + 0.45 + 0.50) / 4)


def test_summary_of_a_ticket_run():
    s = summarize(TICKET, target=0.5, find_seconds=15.0)
    assert s == {
        "metric": "val_pgd",
        "target": 0.5,
        "epochs_to_target": 2,
        "train_seconds_to_target": 22.0,
        "total_seconds_to_target": 37.0,
        "auc": pytest.approx(0.455),
        "best_val": 0.52,
        "best_val_epoch": 2,
        "epoch1_val": 0.35,
        "epoch1_val_clean": 0.65,
        "epochs": 4,
        "train_seconds": 44.0,
        # the hand-made curve records no work: no work numbers, rather than made-up ones
        "work_to_target": None,
        "reference_seconds_to_target": None,
        "work_flops": None,
    }


def test_work_to_target_counts_the_finding_and_converts_at_the_reference_rate():
    from boosting_tickets.training.work import paper_implied_rate

    rows = [dict(r, cum_work_flops=2e12 * r["epoch"]) for r in TICKET]
    s = summarize(rows, target=0.5, find_seconds=15.0, find_work=1e12)
    assert s["work_to_target"] == 5e12  # 2 epochs x 2 TFLOP + 1 TFLOP of finding
    assert s["reference_seconds_to_target"] == pytest.approx(5e12 / paper_implied_rate())
    assert s["work_flops"] == 8e12
    assert summarize(rows, target=0.5, find_work=None)["work_to_target"] is None


def test_unreached_target_and_unknown_target():
    assert epochs_to_target(DENSE, 0.51) is None
    assert seconds_to_target(DENSE, 0.51, offset=100.0) is None
    s = summarize(DENSE, target=None)
    assert s["epochs_to_target"] is None and s["total_seconds_to_target"] is None
    assert s["best_val"] == 0.5
    assert summarize([], target=0.5)["epochs"] == 0


def test_equal_value_counts_as_reached_and_missing_values_break_auc():
    # 0.1 + 0.2 is 0.30000000000000004 in floating point; an accuracy equal to the target reaches it.
    rows = curve([0.1, 0.3], [1.0, 1.0])
    assert epochs_to_target(rows, 0.1 + 0.2) == 2
    rows[0]["val_pgd"] = None
    assert mean_over_epochs(rows) is None
    assert first_reach(rows, 0.3)["epoch"] == 2


@settings(max_examples=50, deadline=None)
@given(
    # Held-out accuracies are counts over the held-out set: k / n.
    st.lists(st.integers(0, 500).map(lambda k: k / 500), min_size=1, max_size=15),
    st.integers(0, 500).map(lambda k: k / 500),
    st.floats(0.0, 100.0),
)
def test_properties(values, target, offset):
    rows = curve(values, [2.0] * len(values))
    e = epochs_to_target(rows, target)
    if e is None:
        assert max(values) < target
    else:
        assert values[e - 1] >= target - 1e-12 and all(v < target for v in values[: e - 1])
        assert seconds_to_target(rows, target, offset=offset) == pytest.approx(2.0 * e + offset)
    assert min(values) - 1e-12 <= mean_over_epochs(rows) <= max(values) + 1e-12
    # The best value is always reached, at its (first) best epoch.
    ep, best = best_epoch(rows)
    assert epochs_to_target(rows, best) == ep
