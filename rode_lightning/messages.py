"""Wording shared by the error messages of the checkpoint and weight loaders."""

from __future__ import annotations


def first_names(names: list[str], limit: int = 5) -> str:
    """The first ``limit`` names and how many more: a message that names what is wrong without listing 7B tensors."""
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
