"""Held-out splits for datasets that release fewer splits than training needs.

Nutrition5k and Food-101 publish train and test only, and a user's own folder may have no validation set at all.
Their ``val`` split is carved out of ``train`` by :func:`is_held_out`, one item at a time, never by shuffling and
cutting a list.
"""

from __future__ import annotations

import hashlib

from rode_lightning.user_errors import UserError

DEFAULT_VAL_FRACTION = 0.1
"""Share of the training items held out as ``val`` when a dataset has no validation split of its own."""


def is_held_out(key: str, fraction: float = DEFAULT_VAL_FRACTION) -> bool:
    """Whether the item named ``key`` (a dish id, an image path) belongs to the held-out share ``fraction``.

    The item is held out when the SHA-256 of its key, read as a number in [0, 1), is below ``fraction``. Hashing the
    key makes the choice depend on the item alone: it is the same on every machine and Python run (unlike
    ``hash()``), the two sides never overlap, and an item keeps its side when the list gains or loses other items,
    so a checkpoint's validation items stay unseen.
    """
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def check_fraction(fraction: float, name: str = "val_fraction") -> None:
    if not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise UserError(f"{name}={fraction!r}: expected a number in [0, 1)")
