"""Each measured arm against its dense baseline, paired by seed, and the speed verdicts.

Speed gets two verdicts, one per cost axis, each ``faster``, ``slower`` or ``inconclusive``
(:func:`speed_verdict`): **work** (training FLOPs to the target, ticket finding included; what a
noisy machine cannot distort) and **wall-clock** (training seconds to the target, finding
included). A verdict needs the target above chance (``report.targets``), at least
``stats.MIN_SEEDS`` seeds where both arms reached it, and a paired 95% t-interval of the
difference that excludes zero. Otherwise it is ``inconclusive`` (or ``no verdict`` when there is
nothing to judge), with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .collect import Group, convergence_field
from .stats import MIN_SEEDS, Paired, paired_difference

FASTER, SLOWER, INCONCLUSIVE, NO_VERDICT = "faster", "slower", "inconclusive", "no verdict"


@dataclass(frozen=True)
class Verdict:
    """One axis's verdict and why."""

    verdict: str
    reason: str


@dataclass(frozen=True)
class ArmComparison:
    """One measured arm against its dense baseline, paired by seed."""

    group: Group
    baseline: Group
    pgd: Paired
    clean: Paired
    epochs: Paired
    work: Paired
    total_seconds: Paired
    reached: tuple[int, int]  # (seeds where the arm reached the target, seeds with a target)
    work_verdict: Verdict
    wall_verdict: Verdict
    sentence: str

    @property
    def verdict(self) -> str:
        """The work verdict: the primary one."""
        return self.work_verdict.verdict


def baseline_group(g: Group, groups: Sequence[Group]) -> Group | None:
    names = {r.get("baseline") for r in g.rows} - {None}
    if len(names) != 1:
        return None
    name = names.pop()
    for other in groups:
        if other.doc is g.doc and other.arm == name:
            return other
    return None


def fmt_diff(p: Paired, *, pct: bool = False, digits: int = 2, scale: float | None = None) -> str:
    """``+1.23 [-0.40, +2.86]``, or the mean with "(no interval)" below ``MIN_SEEDS`` pairs."""
    iv = p.diff
    if iv.mean is None:
        return "–"
    k = scale if scale is not None else (100.0 if pct else 1.0)
    text = f"{k * iv.mean:+.{digits}f}"
    if iv.has_interval:
        text += f" [{k * iv.low:+.{digits}f}, {k * iv.high:+.{digits}f}]"  # type: ignore[operator]
    elif iv.n > 0:
        text += " (no interval)"
    return text


def target_usable(g: Group) -> bool | None:
    """False when the group's target is at or below chance + 2 SE; None when unknown."""
    return None if g.target is None else g.target.get("above_chance")


def speed_verdict(
    arm: Mapping[int, float | None], base: Mapping[int, float | None], *, above_chance: bool | None
) -> tuple[Verdict, Paired]:
    """The verdict on one cost axis from per-seed costs to the target (None: never reached).

    * target at or below chance + 2 SE: no verdict;
    * the baseline never reached it: no verdict;
    * the arm reached it in none of the baseline's seeds: slower with >= MIN_SEEDS seeds, else
      inconclusive; in some but not all: inconclusive;
    * otherwise the paired difference (arm - baseline): faster if its 95% t-interval lies below
      zero, slower if above, inconclusive if it includes zero or there are < MIN_SEEDS pairs.
    """
    paired = paired_difference(arm, base)
    if above_chance is False:
        return Verdict(NO_VERDICT, "the target is at or below chance + 2 SE"), paired
    seeds = [s for s, v in base.items() if v is not None and s in arm]
    if not seeds:
        return Verdict(NO_VERDICT, "the baseline never reached the target"), paired
    missed = [s for s in seeds if arm.get(s) is None]
    where = f"the {len(seeds)} seed(s) where the baseline reached it"
    if len(missed) == len(seeds):
        if len(seeds) >= MIN_SEEDS:
            return Verdict(SLOWER, f"never reached the target in {where}"), paired
        why = f"never reached the target in {where}; fewer than {MIN_SEEDS} seeds"
        return Verdict(INCONCLUSIVE, why), paired
    if missed:
        why = f"missed the target in {len(missed)} of {where}"
        return Verdict(INCONCLUSIVE, why), paired
    d = paired.diff
    if not d.has_interval:
        return Verdict(INCONCLUSIVE, f"{d.n} paired seed(s): no interval"), paired
    if d.high < 0:  # type: ignore[operator]
        return Verdict(FASTER, "the 95% interval lies below zero"), paired
    if d.low > 0:  # type: ignore[operator]
        return Verdict(SLOWER, "the 95% interval lies above zero"), paired
    return Verdict(INCONCLUSIVE, "the 95% interval includes zero"), paired


def compare_arms(g: Group, base: Group) -> ArmComparison:
    """Paired differences (arm - baseline) and the work and wall-clock verdicts."""

    def pair(get):  # noqa: ANN001, ANN202
        return paired_difference(g.by_seed(get), base.by_seed(get))

    pgd = pair(lambda r: r.get("pgd_acc"))
    clean = pair(lambda r: r.get("clean_acc"))
    epochs = pair(convergence_field("epochs_to_target"))
    usable = target_usable(base) if base.target is not None else target_usable(g)
    work_v, work = speed_verdict(
        g.by_seed(convergence_field("work_to_target")),
        base.by_seed(convergence_field("work_to_target")),
        above_chance=usable,
    )
    if all(r.get("curve") and r["curve"][-1].get("cum_work_flops") is None for r in g.rows):
        work_v = Verdict(NO_VERDICT, "no work recorded: results written before work was")
    wall_v, total = speed_verdict(
        g.by_seed(convergence_field("total_seconds_to_target")),
        base.by_seed(convergence_field("total_seconds_to_target")),
        above_chance=usable,
    )
    hit = reached(g)
    sentence = (
        f"work to target (finding included): {work_v.verdict} ({work_v.reason}); "
        f"wall-clock: {wall_v.verdict} ({wall_v.reason}); reached the target in "
        f"{hit[0]} of {hit[1]} seeds"
    )
    return ArmComparison(
        g, base, pgd, clean, epochs, work, total, hit, work_v, wall_v, sentence
    )  # fmt: skip


def reached(g: Group) -> tuple[int, int]:
    """(seeds that reached their target, seeds that had a target at all)."""
    with_target = [r for r in g.rows if convergence_field("target")(r) is not None]
    return sum(convergence_field("epochs_to_target")(r) is not None for r in with_target), len(
        with_target
    )


def epoch_time_spread(groups: Sequence[Group], limit: float = 1.5) -> list[str]:
    """Warnings where arms of one results file with the same work per epoch differ in median
    epoch time by more than ``limit``x: their wall-clock comparison measures the machine."""
    import statistics

    out = []
    by_doc: dict[int, list[Group]] = {}
    for g in groups:
        if g.has_curves:
            by_doc.setdefault(id(g.doc), []).append(g)
    for gs in by_doc.values():
        classes: dict[float, list[tuple[str, float]]] = {}
        for g in gs:
            works = {c.get("work_flops") for r in g.rows for c in r["curve"]}
            if len(works) != 1 or None in works:
                continue
            secs = [c["train_seconds"] for r in g.rows for c in r["curve"]]
            classes.setdefault(round(float(works.pop()), -3), []).append(
                (g.arm, statistics.median(secs))
            )
        for arms in classes.values():
            if len(arms) < 2:
                continue
            (fast, lo), (slow, hi) = min(arms, key=lambda a: a[1]), max(arms, key=lambda a: a[1])
            if lo > 0 and hi / lo > limit:
                out.append(
                    f"{gs[0].suite}: {slow} and {fast} do the same work per epoch, but their "
                    f"median epoch times differ {hi / lo:.2f}x ({hi:.1f} s vs {lo:.1f} s): the "
                    "machine's load, not the arms, decides their wall-clock comparison"
                )
    return out
