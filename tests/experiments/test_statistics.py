"""Aggregation over seeds against values computed by hand."""

from __future__ import annotations

import math

import pytest

from rode_lightning.experiments.statistics import paired_difference, summarize


def test_mean_std_and_t_interval_by_hand():
    summary = summarize([1.0, 2.0, 4.0])
    # mean 7/3; deviations -4/3, -1/3, 5/3; sum of squares 42/9; / (n-1) = 7/3
    assert summary.mean == pytest.approx(7 / 3)
    assert summary.std == pytest.approx(math.sqrt(7 / 3))
    half = 4.302652729911275 * math.sqrt(7 / 3) / math.sqrt(3)  # t(0.975, 2)
    assert (summary.low, summary.high) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    single = summarize([5.0])
    assert single.n == 1 and single.std == 0.0 and math.isnan(single.low)
    with pytest.raises(ValueError):
        summarize([])


def test_paired_differences_use_the_shared_seeds_and_count_signs_by_direction():
    variant = {0: 0.50, 1: 0.60, 2: 0.55, 3: 0.9}
    reference = {0: 0.40, 1: 0.65, 2: 0.45}
    paired = paired_difference(variant, reference, higher_is_better=True)
    assert paired.seeds == (0, 1, 2)
    assert paired.summary.mean == pytest.approx((0.10 - 0.05 + 0.10) / 3)
    assert (paired.better, paired.worse) == (2, 1)
    lower = paired_difference(variant, reference, higher_is_better=False)  # e.g. pMAE: a rise is worse
    assert (lower.better, lower.worse) == (1, 2)
    assert paired_difference({5: 1.0}, reference, True) is None
