"""Each measured arm against its dense baseline, paired by seed, and the speed verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .collect import Group, convergence_field
from .stats import Paired, paired_difference


@dataclass(frozen=True)
class ArmComparison:
    """One measured arm against its dense baseline, paired by seed."""

    group: Group
    baseline: Group
    pgd: Paired
    clean: Paired
    epochs: Paired
    total_seconds: Paired
    reached: tuple[int, int]  # (seeds where the arm reached the target, seeds with a target)
    verdict: str
    sentence: str


def baseline_group(g: Group, groups: Sequence[Group]) -> Group | None:
    names = {r.get("baseline") for r in g.rows} - {None}
    if len(names) != 1:
        return None
    name = names.pop()
    for other in groups:
        if other.doc is g.doc and other.arm == name:
            return other
    return None


def fmt_diff(p: Paired, *, pct: bool, digits: int, unit: str = "") -> str:
    iv = p.diff
    if iv.mean is None:
        return "–"
    scale = 100.0 if pct else 1.0
    text = f"{scale * iv.mean:+.{digits}f}{unit}"
    if iv.has_interval:
        text += f" [{scale * iv.low:+.{digits}f}, {scale * iv.high:+.{digits}f}]"  # type: ignore[operator]
    return text


def compare_arms(g: Group, base: Group) -> ArmComparison:
    """Paired differences (arm - baseline) and the computed speed verdict."""
    pgd = paired_difference(
        g.by_seed(lambda r: r.get("pgd_acc")), base.by_seed(lambda r: r.get("pgd_acc"))
    )
    clean = paired_difference(
        g.by_seed(lambda r: r.get("clean_acc")), base.by_seed(lambda r: r.get("clean_acc"))
    )
    epochs = paired_difference(
        g.by_seed(convergence_field("epochs_to_target")),
        base.by_seed(convergence_field("epochs_to_target")),
    )
    total = paired_difference(
        g.by_seed(convergence_field("total_seconds_to_target")),
        base.by_seed(convergence_field("total_seconds_to_target")),
    )
    hit = reached(g)
    verdict, sentence = speed_verdict(g.arm, base.arm, total, epochs, hit)
    return ArmComparison(g, base, pgd, clean, epochs, total, hit, verdict, sentence)


def speed_verdict(
    arm: str, baseline: str, total: Paired, epochs: Paired, reached: tuple[int, int]
) -> tuple[str, str]:
    """('faster' | 'not faster' | 'no verdict', one sentence) from the paired time differences.

    Faster means: reached the target in every seed and needed less total time (finding included) on
    average over the seeds where both reached it. The sentence says whether the interval of the
    difference excludes zero.
    """
    hit, n = reached
    if n == 0:
        return (
            "no verdict",
            f"{arm} has no convergence target: {baseline} has no finished run for its seeds",
        )
    if hit == 0:
        return (
            "not faster",
            f"{arm} never reached the target (0 of {n} seeds), so it was not faster than {baseline}",
        )
    d = total.diff
    if d.mean is None:
        return ("no verdict", f"{arm} and {baseline} never both reached the target in one seed")
    e = epochs.diff
    epoch_txt = ""
    if e.mean is not None and e.mean == 0:
        epoch_txt = ", the same number of epochs"
    elif e.mean is not None:
        k = abs(e.mean)
        epoch_txt = f", {k:.2g} epoch{'' if k == 1 else 's'} {'fewer' if e.mean < 0 else 'more'}"
    where = f"{d.n} paired seed{'s' if d.n != 1 else ''}"
    if d.has_interval and d.sd == 0.0:
        noise = "the same difference in every seed (no spread to test)"
    elif d.has_interval:
        excl = d.high < 0 or d.low > 0  # type: ignore[operator]
        noise = (
            "the 95% interval excludes zero"
            if excl
            else "the 95% interval includes zero (within seed noise)"
        )
    else:
        noise = d.note or "no interval"
    secs = f"{abs(d.mean):,.0f}" if abs(d.mean) >= 100 else f"{abs(d.mean):.1f}"
    diff_txt = (
        f"{secs} s {'less' if d.mean < 0 else 'more'} total time to the target "
        f"(ticket finding included){epoch_txt}, over {where}; {noise}"
    )
    if hit < n:
        return (
            "not faster",
            f"{arm} was not faster than {baseline}: it missed the target in {n - hit} of {n} "
            f"seeds; where both reached it: {diff_txt}",
        )
    verdict = "faster" if d.mean < 0 else "not faster"
    return verdict, f"{arm} was {verdict} than {baseline}: {diff_txt}"


def reached(g: Group) -> tuple[int, int]:
    """(seeds that reached their target, seeds that had a target at all)."""
    with_target = [r for r in g.rows if convergence_field("target")(r) is not None]
    return sum(convergence_field("epochs_to_target")(r) is not None for r in with_target), len(
        with_target
    )
