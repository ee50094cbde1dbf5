"""Reader for the Uni-Food format of this project (documented in README.md).

A Uni-Food root holds ``annotations/<split>.jsonl`` with one dish per line and the images the records point to.
Every problem names the file and the line; a record that cannot be used either stops the run or is skipped and
counted, as the caller chooses (``on_error``), never dropped silently.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

# DataFormatError, OnError and SkipCounter live in errors.py (shared with the Nutrition5k reader); they are
# re-exported here because other modules import them from this one.

from rode_lightning.data.errors import (DataFormatError, MissingSplitError, OnError, SkipCounter, check_on_error,
                                       report_bad_record)
from rode_lightning.conventions import NUTRITION_FIELDS, TASKS
from rode_lightning.data.images import check_image
from rode_lightning.data.nutrients import NUTRITION_LIMITS, nutrient_value
from rode_lightning.data.records import FoodRecord, Ingredient
from rode_lightning.data.splits import DEFAULT_VAL_FRACTION, belongs_to, check_fraction, check_split
from rode_lightning.data.text_files import read_text
from rode_lightning.progress import progress
from rode_lightning.user_errors import MissingFileError

log = logging.getLogger(__name__)

__all__ = ["DataFormatError", "NUTRITION_LIMITS", "OnError", "SkipCounter", "parse_unifood_record",
           "read_unifood_split"]


def read_unifood_split(root: str | Path, split: str, on_error: OnError = "raise",
                       skipped: SkipCounter | None = None,
                       val_fraction: float = DEFAULT_VAL_FRACTION) -> list[FoodRecord]:
    """The records of ``annotations/<split>.jsonl``.

    A root without ``val.jsonl`` is common for one's own data: its ``val`` is then the share ``val_fraction`` of
    ``train.jsonl`` that :func:`~rode_lightning.data.splits.is_held_out` picks by record id, and ``train`` the rest
    (logged). A missing ``test.jsonl`` raises :class:`MissingSplitError`, which the data module turns into "no
    Uni-Food test split" unless ``test`` runs. A bad line is reported whichever side of the hold-out its record is
    on, as it may have no usable id to decide by.
    """
    check_on_error(on_error)
    check_split(split, "Uni-Food")
    check_fraction(val_fraction)
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"Uni-Food root {root} does not exist or is not a directory (expected "
                               f"annotations/train.jsonl and the images it names)")
    held_out = split in ("train", "val") and not (root / "annotations" / "val.jsonl").is_file()
    path = root / "annotations" / f"{'train' if held_out else split}.jsonl"
    if held_out and split == "val":
        log.info("Uni-Food %s has no annotations/val.jsonl: validating on the %.0f%% of train.jsonl held out by "
                 "record id (the source's val_fraction)", root, 100 * val_fraction)
    if not path.is_file():
        raise MissingSplitError(f"Uni-Food split {split!r}: expected the annotation file {path}, which does not "
                                f"exist")
    skipped = SkipCounter() if skipped is None else skipped
    records = _read_records(path, root, split, on_error, skipped, val_fraction if held_out else None)
    if not records:
        raise DataFormatError(f"{path}: no usable records in split {split!r} (skipped: {skipped.report()})")
    return records


def _read_records(path: Path, root: Path, split: str, on_error: OnError, skipped: SkipCounter,
                  val_fraction: float | None) -> list[FoodRecord]:
    """The usable records of one annotation file; with ``val_fraction``, only those on ``split``'s side of the
    hold-out."""
    lines = read_text(path, "JSON lines").splitlines()
    records, seen_ids = [], set()
    for line_number, line in enumerate(progress(lines, f"reading Uni-Food {split}", "record"), start=1):
        if not line.strip():
            continue
        try:
            record = parse_unifood_record(line, root)
            if record.id in seen_ids:
                raise DataFormatError(f"duplicate id {record.id!r}")
            seen_ids.add(record.id)
        except DataFormatError as error:
            report_bad_record(error, f"{path}:{line_number}", on_error, skipped, f"unifood/{split}")
            continue
        if val_fraction is None or belongs_to(record.id, split, val_fraction):
            records.append(record)
    return records


def parse_unifood_record(line: str, root: Path) -> FoodRecord:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataFormatError(f"malformed JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(raw, dict):
        raise DataFormatError(f"malformed record: expected a JSON object, got {type(raw).__name__}")
    for key in ("id", "image"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise DataFormatError(f"missing field: {key!r} must be a non-empty string")
    image = root / raw["image"]
    ingredients = tuple(_parse_ingredient(item) for item in raw.get("ingredients") or [])
    if "ingredients" in raw and not ingredients:
        raise DataFormatError("no ingredients: 'ingredients' is an empty list")
    recipe = raw.get("recipe") or []
    if not isinstance(recipe, list) or not all(isinstance(step, str) for step in recipe):
        raise DataFormatError("malformed recipe: 'recipe' must be a list of strings")
    category = raw.get("category")
    if category is not None and not isinstance(category, str):
        raise DataFormatError("malformed category: 'category' must be a string")
    nutrition = raw.get("nutrition")
    if nutrition is not None:
        nutrition = _parse_nutrition(nutrition)
    conversations = _parse_conversations(raw.get("conversations") or {})
    # Decodability, not only existence: a truncated file would otherwise fail later, in a data-loader worker.
    # Last, because it is the one check that reads the image file.
    check_image(image)
    return FoodRecord(id=raw["id"], image=str(image), dataset="unifood", category=category,
                      ingredients=ingredients, recipe=tuple(recipe), nutrition=nutrition,
                      conversations=conversations)


def _parse_conversations(raw) -> dict[str, tuple[str, str]]:
    """``{"<task>": {"question": ..., "answer": ...}}``: a task asked and answered in the dataset's own words."""
    if not isinstance(raw, dict):
        raise DataFormatError("malformed conversations: expected an object mapping a task to {question, answer}")
    conversations = {}
    for task, turn in raw.items():
        if task not in TASKS:
            raise DataFormatError(f"unknown conversation task: {task!r}, expected one of {', '.join(TASKS)}")
        if not isinstance(turn, dict) or not all(isinstance(turn.get(key), str) and turn[key].strip()
                                                 for key in ("question", "answer")):
            raise DataFormatError(f"malformed conversation: {task!r} needs non-empty 'question' and 'answer' strings")
        conversations[task] = (turn["question"], turn["answer"])
    return conversations


def _parse_ingredient(item) -> Ingredient:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
        raise DataFormatError(f"malformed ingredient: expected {{'name': str, 'grams': number}}, got {item!r}")
    grams = nutrient_value(item.get("grams", 0.0), f"the grams of {item['name']!r}", None, "bad ingredient grams")
    return Ingredient(item["name"], grams)


def _parse_nutrition(raw) -> dict[str, float]:
    """The fields given, a non-empty subset of NUTRITION_FIELDS: a dataset that lacks one (Recipe1M+ has no
    carbohydrate) leaves it out, and it is then neither taught nor scored. Unknown keys are refused, since a typo
    (``"carbs"``) would otherwise silently drop a field."""
    if not isinstance(raw, dict) or not raw:
        raise DataFormatError("malformed nutrition: expected an object with some of " + ", ".join(NUTRITION_FIELDS))
    unknown = sorted(set(raw) - set(NUTRITION_FIELDS))
    if unknown:
        raise DataFormatError(f"unknown nutrition field: {unknown}, expected some of {', '.join(NUTRITION_FIELDS)}")
    return {key: nutrient_value(raw[key], key, NUTRITION_LIMITS[key]) for key in NUTRITION_FIELDS if key in raw}
