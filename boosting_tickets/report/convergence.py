"""Convergence speed of a training run, from its per-epoch metric rows.

The boosting-ticket claim (Li et al. 2020, arXiv 2003.05733) is about speed: a ticket reaches the dense
network's robust accuracy in fewer PGD epochs, and — counting the cheap run that found it — in less
total time (the paper's Table 3: 15,462 s finding + 54,090 s retraining vs 134,764 s dense).

Inputs are the rows ``training.train`` writes to ``metrics.json``: one per finished epoch, in order,
with ``epoch`` (1-based), ``cum_train_seconds`` (training time only, evaluation excluded),
``cum_work_flops`` (training FLOPs by the cost model, ``training.work``) and the held-out accuracies
``val_clean``, ``val_fgsm``, ``val_pgd`` (fractions in [0, 1]; PGD-20 by default). Accuracy is only
measured at epoch ends, so "time to target" has epoch granularity: the cumulative training time (or
work) at the end of the first epoch whose held-out accuracy reaches the target. Work is the cost
axis a noisy machine cannot distort; ``reference_seconds_to_target`` turns it into seconds at the
paper's implied 2x V100 rate (``training.work.paper_implied_rate``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_METRIC = "val_pgd"
# Accuracies are ratios of counts stored as floats: treat a value within this of the target as equal.
_TOL = 1e-12


def _values(rows: Sequence[Mapping[str, Any]], key: str) -> list[float | None]:
    return [r.get(key) for r in rows]


def first_reach(
    rows: Sequence[Mapping[str, Any]], target: float, key: str = DEFAULT_METRIC
) -> Mapping[str, Any] | None:
    """The first row whose ``key`` is at least ``target``; None if no epoch reaches it."""
    for r in rows:
        v = r.get(key)
        if v is not None and v >= target - _TOL:
            return r
    return None


def epochs_to_target(
    rows: Sequence[Mapping[str, Any]], target: float, key: str = DEFAULT_METRIC
) -> int | None:
    """Epochs of training until held-out ``key`` first reaches ``target`` (None: never)."""
    r = first_reach(rows, target, key)
    return None if r is None else int(r["epoch"])


def seconds_to_target(
    rows: Sequence[Mapping[str, Any]],
    target: float,
    key: str = DEFAULT_METRIC,
    *,
    offset: float = 0.0,
) -> float | None:
    """Training seconds until ``key`` first reaches ``target``, plus ``offset`` (None: never).

    ``offset`` adds time spent before this run, i.e. the ticket-finding run's training time, which
    turns "retraining time" into the paper's "total time".
    """
    r = first_reach(rows, target, key)
    return None if r is None else float(r["cum_train_seconds"]) + offset


def mean_over_epochs(rows: Sequence[Mapping[str, Any]], key: str = DEFAULT_METRIC) -> float | None:
    """Normalized area under the ``key``-vs-epoch curve: (1/E) · Σ_e value_e over epochs 1..E.

    Each epoch's held-out value stands for the whole epoch (a step function), so this is the area
    divided by the curve's length, in [0, 1]: higher means robust accuracy came earlier. Runs with
    the same epoch count compare directly. None if any epoch lacks the value.
    """
    vals = _values(rows, key)
    if not vals or any(v is None for v in vals):
        return None
    return sum(vals) / len(vals)  # type: ignore[arg-type]


def best_epoch(
    rows: Sequence[Mapping[str, Any]], key: str = DEFAULT_METRIC
) -> tuple[int, float] | None:
    """(epoch, value) of the highest held-out ``key``; the earliest epoch on ties."""
    best: tuple[int, float] | None = None
    for r in rows:
        v = r.get(key)
        if v is not None and (best is None or v > best[1]):
            best = (int(r["epoch"]), float(v))
    return best


def work_to_target(
    rows: Sequence[Mapping[str, Any]],
    target: float,
    key: str = DEFAULT_METRIC,
    *,
    offset: float | None = 0.0,
) -> float | None:
    """Training FLOPs until ``key`` first reaches ``target``, plus ``offset`` (the finding's
    work); None if never reached or if the run (or ``offset``) has no work recorded."""
    r = first_reach(rows, target, key)
    if r is None or r.get("cum_work_flops") is None or offset is None:
        return None
    return float(r["cum_work_flops"]) + offset


def summarize(
    rows: Sequence[Mapping[str, Any]],
    *,
    target: float | None,
    find_seconds: float = 0.0,
    find_work: float | None = 0.0,
    key: str = DEFAULT_METRIC,
) -> dict[str, Any]:
    """All convergence numbers of one run as a JSON-ready dict.

    Keys: ``target`` (the threshold used, None if unknown), ``epochs_to_target``,
    ``train_seconds_to_target`` (this run only), ``total_seconds_to_target`` (plus ``find_seconds``),
    ``work_to_target`` (training FLOPs plus ``find_work``, the finding's; None where unrecorded),
    ``reference_seconds_to_target`` (that work at the paper's implied rate), ``auc``
    (:func:`mean_over_epochs`), ``best_val`` and ``best_val_epoch``, ``epoch1_val`` (``key`` after
    one epoch), ``epoch1_val_clean``, ``epochs``, ``train_seconds`` and ``work_flops`` (whole run).
    """
    from ..training.work import paper_implied_rate

    best = best_epoch(rows, key)
    first = rows[0] if rows else {}
    reach = target is not None
    work = work_to_target(rows, target, key, offset=find_work) if reach else None
    return {
        "metric": key,
        "target": target,
        "epochs_to_target": epochs_to_target(rows, target, key) if reach else None,
        "train_seconds_to_target": seconds_to_target(rows, target, key) if reach else None,
        "total_seconds_to_target": (
            seconds_to_target(rows, target, key, offset=find_seconds) if reach else None
        ),
        "work_to_target": work,
        "reference_seconds_to_target": None if work is None else work / paper_implied_rate(),
        "auc": mean_over_epochs(rows, key),
        "best_val": None if best is None else best[1],
        "best_val_epoch": None if best is None else best[0],
        "epoch1_val": first.get(key),
        "epoch1_val_clean": first.get("val_clean"),
        "epochs": len(rows),
        "train_seconds": float(rows[-1]["cum_train_seconds"]) if rows else 0.0,
        "work_flops": (rows[-1].get("cum_work_flops") if rows else 0.0),
    }
