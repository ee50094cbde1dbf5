"""The check that no pre-training text carries a fine-tuning task's question or answer format.

The demo base must know food the way a pre-trained LLaVA does, not the tasks it is about to be measured on:
otherwise the adapters' share of the result could not be told from the base's. Every caption and text is checked
before pre-training uses it (:func:`check_texts`), and the tests check the pictures too.
"""

from __future__ import annotations

import re

from rode_lightning.conventions import NUTRITION_UNITS, SYSTEM_PROMPT
from rode_lightning.data.dishes import CATEGORIES, INGREDIENTS
from rode_lightning.data.prompts import QUESTIONS

_NUTRITION_ANSWER = re.compile(r"\b(" + "|".join(label for label, _ in NUTRITION_UNITS.values()) + r")\s*:\s*\d",
                               re.IGNORECASE)
_NUMBERED_STEP = re.compile(r"(^|\s)\d+\.\s+[A-Z]")
_RECIPE_STEPS = [f"{spec.preparation.capitalize()} the {name}." for name, spec in INGREDIENTS.items()] + [
    spec.finish for spec in CATEGORIES.values()]


def task_format_leaks(text: str) -> list[str]:
    """Why ``text`` looks like fine-tuning data (empty when it does not)."""
    reasons = []
    lowered = text.lower()
    reasons += [f"task question {q!r}" for phrasings in QUESTIONS.values() for q in phrasings if q.lower() in lowered]
    if "USER:" in text or "ASSISTANT:" in text or SYSTEM_PROMPT in text:
        reasons.append("the conversation template")
    if _NUTRITION_ANSWER.search(text):
        reasons.append("a nutrition answer ('<field>: <number>')")
    if _NUMBERED_STEP.search(text):
        reasons.append("a numbered recipe step")
    reasons += [f"the recipe step {step!r}" for step in _RECIPE_STEPS if step in text]
    if lowered.strip(" .") in CATEGORIES:
        reasons.append("a category answer on its own")
    return reasons


def check_texts(texts: list[str], what: str) -> None:
    for index, text in enumerate(texts):
        reasons = task_format_leaks(text)
        if reasons:
            raise ValueError(f"{what} {index} looks like fine-tuning data ({'; '.join(reasons)}): {text!r}")
