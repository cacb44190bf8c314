"""Across-seed statistics against scipy: t-intervals, paired differences and t-tests."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from boosting_tickets.report.stats import mean_ci, paired_difference

accuracies = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(accuracies, min_size=3, max_size=12), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_interval_equals_scipy_t_interval(values, confidence):
    iv = mean_ci(values, confidence)
    assert iv.n == len(values)
    assert iv.mean == pytest.approx(sum(values) / len(values), abs=1e-12)
    sem = sps.sem(values)
    # Spreads at rounding level count as none (documented in mean_ci): a zero-width interval.
    tiny = float(sps.tstd(values)) <= 1e-6 * max(1.0, abs(iv.mean))
    if sem == 0 or not math.isfinite(sem) or tiny:
        assert iv.low == pytest.approx(iv.mean) and iv.high == pytest.approx(iv.mean)
        return
    low, high = sps.t.interval(confidence, len(values) - 1, loc=iv.mean, scale=sem)
    assert iv.low == pytest.approx(low, rel=1e-9, abs=1e-12)
    assert iv.high == pytest.approx(high, rel=1e-9, abs=1e-12)
    assert iv.low <= iv.mean <= iv.high


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(accuracies, accuracies), min_size=3, max_size=10))
def test_paired_difference_equals_scipy_ttest_rel(pairs):
    a = {seed: x for seed, (x, _) in enumerate(pairs)}
    b = {seed: y for seed, (_, y) in enumerate(pairs)}
    p = paired_difference(a, b)
    diffs = [x - y for x, y in pairs]
    assert p.n == len(pairs)
    assert p.diff.mean == pytest.approx(sum(diffs) / len(diffs), abs=1e-12)
    if p.t is None:  # zero spread of the differences: the t-test is undefined
        assert p.diff.sd == 0.0 and "undefined" in p.note
        return
    ref = sps.ttest_rel([x for x, _ in pairs], [y for _, y in pairs])
    assert p.t == pytest.approx(ref.statistic, rel=1e-6)
    assert p.p == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)


def test_hand_computed_interval():
    # mean 0.5, sd 0.1 (ddof 1), n 3: half width = t_{0.975,2} * 0.1 / sqrt(3) = 4.302653 * 0.057735
    iv = mean_ci([0.4, 0.5, 0.6])
    assert iv.mean == pytest.approx(0.5)
    assert iv.sd == pytest.approx(0.1)
    assert iv.half_width == pytest.approx(4.302652729749464 * 0.1 / math.sqrt(3))


def test_fewer_than_three_values_keep_the_values_instead_of_an_interval():
    one = mean_ci([0.42])
    assert one.mean == 0.42 and one.low is None and one.high is None and one.half_width is None
    assert one.note == "1 seed: no interval" and one.values == (0.42,)
    # Two seeds: t_{0.975,1} = 12.7 would give "40.50 ± 99.53"; the values, no interval.
    two = mean_ci([0.3, 0.51])
    assert two.mean == pytest.approx(0.405) and not two.has_interval and two.values == (0.3, 0.51)
    assert two.note == "2 seeds: no interval"
    three = mean_ci([0.3, 0.51, 0.4])
    assert three.has_interval
    none = mean_ci([None, float("nan")])
    assert none.n == 0 and none.mean is None and none.note == "no values"


def test_paired_uses_only_shared_seeds_and_reports_missing_pairs():
    p = paired_difference({0: 0.5, 1: 0.6, 2: 0.7}, {1: 0.4, 2: None, 3: 0.1})
    assert p.seeds == (1,) and p.diff.mean == pytest.approx(0.2)
    assert p.t is None and p.p is None and p.note == "1 paired seed(s): no test"
    assert paired_difference({0: 0.5}, {1: 0.5}).note == "no paired seeds"


def test_confidence_out_of_range_is_rejected():
    with pytest.raises(ValueError):
        mean_ci([0.1, 0.2], confidence=1.0)


def test_differences_equal_up_to_rounding_have_no_spread():
    # 0.414 - 0.5 and 0.426 - 0.512 differ only in the last bits.
    p = paired_difference({0: 0.414, 1: 0.426, 2: 0.438}, {0: 0.5, 1: 0.512, 2: 0.524})
    assert p.diff.sd == 0.0 and p.diff.low == p.diff.high == p.diff.mean
    assert p.t is None and p.p is None and "undefined" in p.note


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=5000), st.floats(min_value=0.0, max_value=1.0))
def test_wilson_interval_contains_the_proportion_and_equals_scipys(n, p):
    from boosting_tickets.report.stats import wilson

    k = round(p * n)
    lo, hi = wilson(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    # scipy's binomtest gives the Wilson interval too (method="wilson").
    ref = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)


def test_wilson_at_300_images_is_about_five_points():
    from boosting_tickets.report.stats import wilson

    lo, hi = wilson(0.4 * 300, 300)
    assert (hi - lo) / 2 == pytest.approx(0.0553, abs=5e-4)
