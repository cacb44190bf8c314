"""Convergence targets that favour no arm, and each row's convergence numbers under them.

"Faster" means: reached a held-out robust accuracy sooner. Which accuracy decides everything, so
the rule is declared in the suite (``[compare] target``) and recorded in the results:

* ``baseline-plateau`` (default): the mean, over the baseline's seeds, of its held-out PGD accuracy
  averaged over its last ``target_window`` epochs (default: the last quarter, at least one),
  times ``target_fraction``. Every arm, the baseline included, is then judged on its own per-epoch
  curve against that one number. A plateau average is not a maximum, so the baseline does not
  reach it by construction; averaging over epochs and seeds cuts its noise by sqrt(window x seeds).
  See docs/speed.md for why this rule was chosen over a split held-out set.
* ``baseline-best``: the baseline's best held-out epoch of the same seed (the old default). It
  favours the baseline: it reaches its own maximum by construction, the others must match a noisy
  maximum (the standard error of 300 held-out images is ~2.8 pp). Kept for comparison.
* a number: a fixed held-out accuracy.

A target at or below chance plus two binomial standard errors of the held-out set
(``chance_floor``) is reached by guessing; the tables warn and give no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .convergence import DEFAULT_METRIC, best_epoch, summarize

PLATEAU, BEST, FIXED = "baseline-plateau", "baseline-best", "fixed"
RULES = (PLATEAU, BEST)


def chance_floor(num_classes: int, n: int) -> float:
    """Chance accuracy plus two binomial standard errors of ``n`` held-out images."""
    c = 1.0 / num_classes
    return c + 2.0 * math.sqrt(c * (1.0 - c) / n)


def default_window(epochs: int) -> int:
    """The plateau window: the last quarter of the baseline's epochs, at least one."""
    return max(1, math.ceil(epochs / 4))


@dataclass(frozen=True)
class Target:
    """The target of one baseline's comparisons (``per_seed`` for ``baseline-best``)."""

    rule: str
    baseline: str | None
    value: float | None = None
    per_seed: Mapping[int, float] = field(default_factory=dict)
    window: int | None = None
    seeds: tuple[int, ...] = ()
    floor: float | None = None

    def for_seed(self, seed: int | None) -> float | None:
        if self.rule == BEST:
            return None if seed is None else self.per_seed.get(int(seed))
        return self.value

    @property
    def values(self) -> list[float]:
        return list(self.per_seed.values()) if self.rule == BEST else [
            v for v in (self.value,) if v is not None
        ]  # fmt: skip

    @property
    def above_chance(self) -> bool | None:
        """True when every target value is above ``floor``; None when the floor is unknown."""
        if self.floor is None or not self.values:
            return None
        return all(v > self.floor for v in self.values)

    def describe(self) -> str:
        if self.rule == FIXED:
            return f"fixed held-out PGD accuracy {self.value:.4g}"
        if self.rule == BEST:
            return f"the '{self.baseline}' arm's best held-out PGD accuracy (same seed)"
        return (
            f"the '{self.baseline}' arm's held-out PGD accuracy over its last {self.window} "
            f"epoch(s), averaged over {len(self.seeds)} seed(s)"
        )

    def record(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "baseline": self.baseline,
            "value": self.value,
            "per_seed": {str(k): v for k, v in sorted(self.per_seed.items())},
            "window": self.window,
            "seeds": list(self.seeds),
            "chance_floor": self.floor,
            "above_chance": self.above_chance,
            "describe": self.describe(),
        }


def build_target(
    compare: Mapping[str, Any],
    baseline: str | None,
    baseline_rows: Sequence[Mapping[str, Any]],
    *,
    floor: float | None,
) -> Target:
    """The target a suite's ``compare`` settings give, from the baseline's rows (with curves)."""
    fraction = float(compare.get("target_fraction", 1.0))
    if compare.get("target") is not None:
        return Target(FIXED, baseline, float(compare["target"]), floor=floor)
    rule = compare.get("rule") or BEST  # results written before rules existed used the best
    curves = {int(r["seed"]): r.get("curve") or [] for r in baseline_rows}
    curves = {s: c for s, c in curves.items() if c}
    if rule == BEST:
        per_seed = {}
        for s, c in curves.items():
            best = best_epoch(c)
            if best is not None:
                per_seed[s] = best[1] * fraction
        return Target(BEST, baseline, None, per_seed, seeds=tuple(sorted(per_seed)), floor=floor)
    epochs = min((len(c) for c in curves.values()), default=0)
    window = compare.get("target_window") or default_window(epochs)
    means = []
    for c in curves.values():
        tail = [e.get(DEFAULT_METRIC) for e in c[-window:]]
        if tail and all(v is not None for v in tail):
            means.append(sum(tail) / len(tail))
    value = None if not means else fraction * sum(means) / len(means)
    return Target(PLATEAU, baseline, value, window=window, seeds=tuple(sorted(curves)), floor=floor)


def row_convergence(row: Mapping[str, Any], target: Target | None) -> dict[str, Any]:
    """The convergence numbers of one results row under ``target`` (finding included)."""
    t = None if target is None else target.for_seed(row.get("seed"))
    find_work = row.get("find_work_flops")
    if row.get("find_train_seconds") is None:  # not a ticket: nothing was found
        find_work = 0.0
    return summarize(
        row.get("curve") or [],
        target=t,
        find_seconds=float(row.get("find_train_seconds") or 0.0),
        find_work=None if find_work is None else float(find_work),
    )


def with_convergence(
    compare: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *, floor: float | None
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """``rows`` with ``convergence`` recomputed under the suite's target rule, and the target
    records by baseline arm. A row is judged against its baseline's target; a row without a
    baseline (the baseline itself) against its own arm's."""
    by_arm: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], []).append(r)
    targets: dict[str, Target] = {}
    out = []
    for r in rows:
        base = r.get("baseline") or r["arm"]
        if base not in targets:
            targets[base] = build_target(compare, base, by_arm.get(base, []), floor=floor)
        out.append({**r, "convergence": row_convergence(r, targets[base])})
    return out, {b: t.record() for b, t in targets.items()}
