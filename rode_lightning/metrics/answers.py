"""Structured values read back from a generated answer, for the JSONL that ``predict`` writes."""

from __future__ import annotations

from rode_lightning.metrics.category import normalize_category
from rode_lightning.metrics.parsing import parse_ingredients, parse_nutrition


def structured_answer(task: str | None, answer: str) -> dict:
    """``{"ingredients": [...]}``, ``{"nutrition": {...}}`` or ``{"category": ...}`` by task; ``{}`` for recipes and
    free questions, whose text is the answer. Parsing never fails: unparseable text gives empty values.

    Ingredients keep the answer's order: the trained answers list the heaviest first, so the order is information
    a reader of the predictions should see."""
    if task == "ingredients":
        return {"ingredients": parse_ingredients(answer)}
    if task == "nutrition":
        return {"nutrition": parse_nutrition(answer)}
    if task == "category":
        return {"category": normalize_category(answer)}
    return {}
