"""Reading model text back into structured answers.

Models write lists in many ways ("rice, egg and carrot", "1. rice\n2. egg", "Ingredients: rice; eggs."), so the
parser splits on every common separator and normalises each name the way InverseCooking does before comparing:
lower case, digits and punctuation removed, ``&`` read as ``and``, simple plurals folded to the singular.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r",|;|&|\n|\band\b|\bwith\b|\u2022|(?:^|\s)\d+[.)]\s")
_LEAD_IN = re.compile(r"^\s*(?:the\s+)?(?:main\s+)?ingredients?\s*(?:are|is|include|:)\s*", re.IGNORECASE)


def normalize_ingredient(name: str) -> str:
    """Canonical form of an ingredient name, used for targets and predictions alike."""
    name = name.lower().replace("&", " and ")
    name = re.sub(r"[^a-z\s]", " ", name)
    words = [_singular(word) for word in name.split()]
    return " ".join(words)


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("oes", "ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def parse_ingredients(text: str) -> set[str]:
    """The set of normalised ingredient names in free model text; empty text gives an empty set."""
    text = _LEAD_IN.sub("", text.strip())
    names = (normalize_ingredient(part) for part in _SEPARATORS.split(text))
    return {name for name in names if name}
