"""Ratios of timings measured side by side, robust to a machine whose speed drifts during the run.

Every variant is timed once per round, and the order of the variants alternates (forward, then reversed), so no
variant always runs after the same neighbour. A ratio is the median over rounds of that round's ratio, so two
variants are only ever compared with timings taken seconds apart; a ratio of two medians taken over the whole run
would compare a variant measured while the machine was fast with one measured while it was slow. The adapter-only
ratio takes the frozen model's time of the same round out of both sides.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable


def round_order(names: list[str], round_index: int) -> Iterable[str]:
    """The order of the variants in round ``round_index``: as given in even rounds, reversed in odd ones."""
    return names if round_index % 2 == 0 else reversed(names)


def timed_rounds(names: list[str], rounds: int, time_one: Callable[[str], float], repeats: int = 1
                 ) -> dict[str, list[float]]:
    """``rounds`` timings of every variant, by name, index ``i`` of each list from round ``i``. Each timing is the
    mean of ``repeats`` calls of ``time_one``: a call of a few milliseconds is at the mercy of one scheduling
    hiccup, a mean over half a second much less. The calls are interleaved (every variant once, then again), not
    run in blocks, so that a slow second of a shared machine falls on every variant of the round alike."""
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        total = dict.fromkeys(names, 0.0)
        for _ in range(repeats):
            for name in round_order(names, index):
                total[name] += time_one(name)
        for name in names:
            times[name].append(total[name] / repeats)
    return times


def repeats_for(seconds_per_call: float, min_sample_seconds: float) -> int:
    """Calls per timing so that one timing lasts at least ``min_sample_seconds``."""
    return max(1, math.ceil(min_sample_seconds / max(seconds_per_call, 1e-9)))


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of ``a / b``."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def paired_excess_ratio(a: list[float], b: list[float], base: list[float]) -> float:
    """Median over rounds of ``(a - base) / (b - base)``: what ``a`` adds to ``base`` against what ``b`` adds."""
    return statistics.median((x - z) / (y - z) for x, y, z in zip(a, b, base, strict=True))
