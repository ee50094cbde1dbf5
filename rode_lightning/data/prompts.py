"""The questions and answers of each food task, in words (how a base model spells them is its conversation format's
business: ``model/formats/``).

Answers have one fixed format per task so that the metrics can parse a model's text back into ingredients,
numbers or a category (see :mod:`rode_lightning.metrics.parsing`).
"""

from __future__ import annotations

import hashlib

from rode_lightning.conventions import CONVERSATION_TASK, NUTRITION_UNITS, TASKS
from rode_lightning.data.records import FoodRecord


QUESTIONS: dict[str, tuple[str, ...]] = {
    "category": (
        "What dish is this?",
        "Which food category does this dish belong to?",
        "Name the dish in the picture.",
    ),
    "ingredients": (
        "What ingredients are in this dish?",
        "List the ingredients you can see on the plate.",
        "Which ingredients does this food contain?",
    ),
    "recipe": (
        "How do I cook this dish?",
        "Give me the recipe for this dish.",
        "Write the cooking instructions for this food.",
    ),
    "nutrition": (
        "Estimate the nutrition of this dish.",
        "How much mass, energy, fat, carbohydrate and protein does this dish have?",
        "What are the nutrition facts of this food?",
    ),
}


def turns_task(record: FoodRecord) -> str | None:
    """The one task a record's own conversation (``turns``) is served for: its tag, else the free-text task."""
    return (record.turns_task or CONVERSATION_TASK) if record.turns else None


def task_available(record: FoodRecord, task: str) -> bool:
    if task in record.conversations or (record.turns and task == turns_task(record)):
        return True
    if task == CONVERSATION_TASK:
        return False
    if task == "category":
        return record.category is not None
    if task == "ingredients":
        return bool(record.ingredients)
    if task == "recipe":
        return bool(record.recipe)
    if task == "nutrition":
        return bool(record.nutrition)
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def answer_for(record: FoodRecord, task: str) -> str:
    """The target answer, in the task's documented format (or as the dataset wrote it, see ``conversations``)."""
    if record.turns and task == turns_task(record):
        return record.turns[-1].text
    if task in record.conversations:
        return record.conversations[task][1]
    if task == "category":
        return record.category
    if task == "ingredients":
        return ", ".join(record.ingredient_names)
    if task == "recipe":
        return " ".join(f"{number}. {step}" for number, step in enumerate(record.recipe, start=1))
    if task == "nutrition":
        return format_nutrition(record.nutrition)
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def format_nutrition(values: dict[str, float]) -> str:
    """``mass: 348 g, energy: 440 kcal, ...`` in the fixed field order; fields the dataset lacks are left out."""
    parts = []
    for key, (label, unit) in NUTRITION_UNITS.items():
        if key not in values:
            continue
        # Whole numbers: a tokenizer that splits digits (LLaMA's, the demo's) makes every digit a token the model
        # must get right, and a tenth of a gram is below what a photo shows (at most 0.05 g of rounding per field).
        parts.append(f"{label}: {values[key]:.0f} {unit}")
    return ", ".join(parts)


def question_for(record: FoodRecord, task: str, seed: int = 0) -> str:
    """One of the task's phrasings, chosen by a hash of (seed, sample, task): stable across runs and workers; the
    dataset's own question where it has one (``FoodRecord.conversations``; the last user turn of ``turns``)."""
    if record.turns and task == turns_task(record):
        return next(turn.text for turn in reversed(record.turns) if turn.role == "user")
    if task in record.conversations:
        return record.conversations[task][0]
    phrasings = QUESTIONS[task]
    key = f"{seed}/{record.dataset}/{record.id}/{task}".encode()
    return phrasings[int.from_bytes(hashlib.sha256(key).digest()[:4], "little") % len(phrasings)]
