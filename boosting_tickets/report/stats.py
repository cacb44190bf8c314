"""Across-seed statistics: mean with a Student-t confidence interval, and paired comparisons.

A benchmark arm runs with a handful of seeds, so intervals use the t distribution with n-1 degrees of
freedom (``scipy.stats.t``, imported lazily). With fewer than :data:`MIN_SEEDS` values there is no
interval: two seeds give a t quantile of 12.7 and intervals such as "40.50 ± 99.53" that say
nothing, so the result keeps the values and says "no interval" in ``note``. A paired comparison
(ticket vs dense) uses the seeds both arms share: the per-seed differences get a t-interval and a
paired t-test (``scipy.stats.ttest_rel``), again from :data:`MIN_SEEDS` pairs on.

A test accuracy is a proportion of n images, so it also gets a Wilson score interval
(:func:`wilson`; Wilson 1927), the binomial error that seeds do not show: ±5 pp at n = 300.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DEFAULT_CONFIDENCE = 0.95
MIN_SEEDS = 3  # fewer values: per-seed values, no interval, no test
# Accuracies arrive computed in float32 (relative precision ~6e-8): spreads below this are rounding.
_REL_TOL = 1e-6


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with a two-sided ``confidence`` t-interval [low, high].

    ``low``/``high`` are None when n < :data:`MIN_SEEDS` (``note`` says why), ``sd`` when n < 2;
    ``mean`` is None when n == 0. ``values`` holds the values themselves, in input order.
    """

    n: int
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None
    confidence: float = DEFAULT_CONFIDENCE
    note: str = ""
    values: tuple[float, ...] = ()

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (the ``±`` value), None without an interval."""
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2

    @property
    def has_interval(self) -> bool:
        return self.low is not None


def _finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_ci(values: Iterable[float | None], confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Mean and ``confidence`` t-interval of ``values`` (None and non-finite values are skipped).

    The interval is ``mean ± t_{(1+c)/2, n-1} · sd / sqrt(n)`` with the sample sd (ddof 1), the same
    as ``scipy.stats.t.interval(c, n-1, loc=mean, scale=scipy.stats.sem(values))``. Identical values
    give a zero-width interval.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    vals = _finite(values)
    n, kept = len(vals), tuple(vals)
    if n == 0:
        return Interval(0, None, None, None, None, confidence, "no values")
    mean = math.fsum(vals) / n
    if n == 1:
        return Interval(1, mean, None, None, None, confidence, "1 seed: no interval", kept)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    # Values equal up to rounding (0.414 - 0.5 vs 0.426 - 0.512, in float32) have no spread to test.
    if sd <= _REL_TOL * max(1.0, abs(mean)):
        sd = 0.0
    if n < MIN_SEEDS:
        return Interval(n, mean, sd, None, None, confidence, f"{n} seeds: no interval", kept)
    if sd == 0.0:
        return Interval(n, mean, 0.0, mean, mean, confidence, "", kept)
    from scipy import stats

    half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * sd / math.sqrt(n)
    return Interval(n, mean, sd, mean - half, mean + half, confidence, "", kept)


@dataclass(frozen=True)
class Paired:
    """``a - b`` over the seeds both have: the mean difference with its interval, and a paired
    t-test (``t``, two-sided ``p``; None with fewer than 2 pairs or zero spread, see ``note``)."""

    seeds: tuple[int, ...]
    diff: Interval
    t: float | None
    p: float | None
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.seeds)


def paired_difference(
    a: Mapping[int, float | None],
    b: Mapping[int, float | None],
    confidence: float = DEFAULT_CONFIDENCE,
) -> Paired:
    """Compare per-seed values ``a[seed]`` with ``b[seed]`` (e.g. ticket vs dense best PGD accuracy).

    Only seeds where both values exist are paired. The difference interval is :func:`mean_ci` of
    ``a[s] - b[s]``; the test is ``scipy.stats.ttest_rel(a, b)``.
    """
    seeds = tuple(
        sorted(
            s
            for s in set(a) & set(b)
            if a[s] is not None
            and b[s] is not None
            and math.isfinite(float(a[s]))  # type: ignore[arg-type]
            and math.isfinite(float(b[s]))  # type: ignore[arg-type]
        )
    )
    xs = [float(a[s]) for s in seeds]  # type: ignore[arg-type]
    ys = [float(b[s]) for s in seeds]  # type: ignore[arg-type]
    diff = mean_ci([x - y for x, y in zip(xs, ys, strict=True)], confidence)
    if len(seeds) < MIN_SEEDS:
        note = "no paired seeds" if not seeds else f"{len(seeds)} paired seed(s): no test"
        return Paired(seeds, diff, None, None, note)
    if diff.sd == 0.0:
        return Paired(seeds, diff, None, None, "identical differences: t-test undefined")
    from scipy import stats

    res = stats.ttest_rel(xs, ys)
    return Paired(seeds, diff, float(res.statistic), float(res.pvalue))


def wilson(correct: float, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval (low, high) of a proportion ``correct / n`` (``correct`` may be the
    proportion times n, i.e. a float). ``n`` must be positive.

    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with z the normal quantile; unlike
    p ± z·se it stays inside [0, 1] and keeps its coverage near 0 and 1.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1.0 + confidence) / 2.0)
    p = min(max(correct / n, 0.0), 1.0)
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    den = 1 + z * z / n
    low = 0.0 if p == 0.0 else max(0.0, (centre - half) / den)  # exact bounds, not rounding
    high = 1.0 if p == 1.0 else min(1.0, (centre + half) / den)
    return low, high
