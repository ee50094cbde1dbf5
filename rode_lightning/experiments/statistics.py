"""The numbers of the report: means, spreads and intervals over seeds, and differences paired by seed.

Seeds are few (3-5), so intervals use Student's t distribution (``scipy.stats.t``), not the normal one. A paired
difference compares two variants run with the same seed, hence the same data order and question phrasings: the
spread between seeds cancels out of it, which is why it can tell two variants apart when their own intervals
overlap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for one value
    low: float  # the 95 % confidence interval of the mean (NaN for one value)
    high: float

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    n = len(values)
    if n == 0:
        raise ValueError("summarize: no values")
    mean = sum(values) / n
    if n == 1:
        return Summary(1, mean, 0.0, math.nan, math.nan)
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / (n - 1))
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class PairedDifference:
    """``variant - reference`` over the seeds both have."""

    summary: Summary
    seeds: tuple[int, ...]
    better: int  # seeds on which the variant is better than the reference (by the metric's direction)
    worse: int

    def as_dict(self) -> dict:
        return {**self.summary.as_dict(), "seeds": list(self.seeds), "better": self.better, "worse": self.worse}


def paired_difference(variant: Mapping[int, float], reference: Mapping[int, float], higher_is_better: bool
                      ) -> PairedDifference | None:
    seeds = tuple(sorted(set(variant) & set(reference)))
    if not seeds:
        return None
    differences = [variant[seed] - reference[seed] for seed in seeds]
    sign = 1 if higher_is_better else -1
    return PairedDifference(summarize(differences), seeds, sum(1 for d in differences if sign * d > 0),
                            sum(1 for d in differences if sign * d < 0))
