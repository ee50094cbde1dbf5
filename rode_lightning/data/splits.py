"""Held-out splits for datasets that release fewer splits than training needs.

Nutrition5k and Food-101 publish train and test only, and a user's own folder (Uni-Food without ``val.jsonl``, a
Hugging Face dataset without a validation split) may have no validation set at all. Their ``val`` split is carved
out of ``train`` by :func:`is_held_out`, one item at a time, never by shuffling and cutting a list; every such reader
takes the same ``val_fraction``, checked by :func:`check_fraction`, with the same default.
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


def belongs_to(key: str, split: str, fraction: float) -> bool:
    """Whether the item ``key`` of a train list without a validation part is served in ``split`` (``train`` or
    ``val``): ``val`` holds the items :func:`is_held_out` picks, ``train`` the rest."""
    return is_held_out(key, fraction) == (split == "val")


def check_fraction(fraction: float, name: str = "val_fraction") -> None:
    """Refuse a share that would leave one side empty by construction: 0 holds nothing out (a ``val`` split with no
    item), 1 keeps nothing for training. The data module and every reader that holds out use this range."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise UserError(f"{name}={fraction!r}: expected a number in (0, 1)")


SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The splits the data module asks every reader for."""


def check_split(split: str, title: str, splits: tuple[str, ...] = SPLITS) -> None:
    """Refuse a split name no reader serves. Only code asks for splits (the data module: :data:`SPLITS`), so this is
    a plain ``ValueError``, a bug's, not a user's mistake."""
    if split not in splits:
        raise ValueError(f"{title} split {split!r}: expected one of {list(splits)}")
