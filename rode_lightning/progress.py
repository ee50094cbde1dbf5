"""Progress bars for the long work before training starts: generating demo data, reading and checking datasets,
loading checkpoint shards.

One place decides when a bar shows: on an interactive terminal (tqdm's ``disable=None``: logs, CI and captured test
output get none), and in the process of global rank 0 only, since every process of a distributed run reads the same
data and weights and one bar says enough. Bars go to stdout, as Lightning's do, so that stderr keeps warnings and
errors only (``rode_lightning/console.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], description: str, unit: str, total: int | None = None) -> Iterable[T]:
    """``items``, with a bar named ``description`` counting ``unit``s where a person is watching."""
    # Imported here: a process that reads data without Lightning (a data-loader worker, a script) does not pay
    # its import (seconds) for a progress bar it may never show.
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    quiet = getattr(rank_zero_only, "rank", 0) != 0
    return tqdm(items, desc=description, unit=unit, total=total, disable=True if quiet else None, leave=False,
                dynamic_ncols=True, file=sys.stdout)
