"""Reader for Nutrition5k in its released layout.

The release (Thames et al., CVPR 2021) is read as published, so a downloaded copy works without conversion::

    root/metadata/dish_metadata_cafe1.csv        no header; one dish per row
    root/metadata/dish_metadata_cafe2.csv
    root/dish_ids/splits/rgb_train_ids.txt       one dish id per line
    root/dish_ids/splits/rgb_test_ids.txt
    root/imagery/realsense_overhead/<dish_id>/rgb.png

A metadata row is ``dish_id, total_calories, total_mass, total_fat, total_carb, total_protein`` followed by seven
fields per ingredient, ``ingr_id, ingr_name, ingr_grams, ingr_calories, ingr_fat, ingr_carb, ingr_protein``. (The
release's README also mentions a ``num_ingrs`` column; the files have none, and the reader reports a row shaped that
way as misaligned.) Note that the dish fields put calories before mass, unlike :data:`NUTRITION_FIELDS`.

**Validation.** Nutrition5k has only train and test splits; ``val`` is served from the train ids held out by
:func:`~rode_lightning.data.splits.is_held_out` on the dish id. A problem in the metadata belongs to its dish and is
reported when a split lists that dish, in both ``on_error`` modes: ``raise`` names the file and line (and the field),
``skip`` counts the dish by reason. So a bad row of a dish no split uses never stops a run, just as it never becomes
a sample. Dishes listed in a split but without an overhead image are normal in Nutrition5k (not every dish was
captured from above): they are always skipped and counted, never an error. A listed dish is checked in this order:
listed twice in the split file, absent from the metadata, bad metadata row, no overhead image, unreadable image; the
first problem found is the one reported, so a typo in a split file shows as an unknown dish rather than hiding among
the missing images.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from rode_lightning.conventions import NUTRITION_FIELDS, normalize_ingredient
from rode_lightning.data.errors import DataFormatError, OnError, SkipCounter, check_on_error, report_bad_record
from rode_lightning.data.images import check_image
from rode_lightning.data.records import FoodRecord, Ingredient, merge_ingredients
from rode_lightning.data.splits import DEFAULT_VAL_FRACTION, belongs_to, check_fraction, check_split
from rode_lightning.data.text_files import read_text
from rode_lightning.data.nutrients import BAD_NUTRITION_VALUE, NUTRITION_LIMITS, nutrient_value
from rode_lightning.progress import progress
from rode_lightning.user_errors import MissingFileError

log = logging.getLogger(__name__)

METADATA_FILES: tuple[str, ...] = ("metadata/dish_metadata_cafe1.csv", "metadata/dish_metadata_cafe2.csv")
SPLIT_FILES: dict[str, str] = {"train": "dish_ids/splits/rgb_train_ids.txt",
                               "test": "dish_ids/splits/rgb_test_ids.txt"}

DISH_COLUMNS: tuple[str, ...] = ("dish_id", "total_calories", "total_mass", "total_fat", "total_carb",
                                 "total_protein")
INGREDIENT_COLUMNS: tuple[str, ...] = ("ingr_id", "ingr_name", "ingr_grams", "ingr_calories", "ingr_fat",
                                       "ingr_carb", "ingr_protein")
# Which of our nutrition fields each numeric column holds; ingredient columns are bounded by the dish limits too.
_COLUMN_FIELD: dict[str, str] = {
    "total_calories": "energy_kcal", "total_mass": "mass_g", "total_fat": "fat_g", "total_carb": "carbohydrate_g",
    "total_protein": "protein_g", "ingr_grams": "mass_g", "ingr_calories": "energy_kcal", "ingr_fat": "fat_g",
    "ingr_carb": "carbohydrate_g", "ingr_protein": "protein_g",
}
_DISH_ID = re.compile(r"dish_\d+")
_INGREDIENT_ID = re.compile(r"ingr_\d+")

# DEFAULT_VAL_FRACTION (data/splits.py) holds out about 330 of Nutrition5k's ~3,300 overhead train dishes.


def overhead_image(root: str | Path, dish_id: str) -> Path:
    """Where the release keeps a dish's overhead RGB image."""
    return Path(root) / "imagery" / "realsense_overhead" / dish_id / "rgb.png"


def read_nutrition5k_split(root: str | Path, split: str, on_error: OnError = "raise",
                           skipped: SkipCounter | None = None,
                           val_fraction: float = DEFAULT_VAL_FRACTION) -> list[FoodRecord]:
    """The usable dishes of ``split`` (``train``, ``val`` or ``test``), in split-file order.

    ``train`` and ``val`` partition ``rgb_train_ids.txt`` by :func:`~rode_lightning.data.splits.is_held_out` on the
    dish id with ``val_fraction``; ``test`` is ``rgb_test_ids.txt``. Records carry ingredients (heaviest first) and
    nutrition; Nutrition5k has no category and no recipe. Skips are counted in ``skipped`` under
    ``nutrition5k/<split>: <reason>``.
    """
    check_on_error(on_error)
    check_split(split, "Nutrition5k")
    check_fraction(val_fraction)
    root = Path(root).absolute()
    if not root.is_dir():
        raise MissingFileError(f"Nutrition5k root {root} does not exist or is not a directory")
    skipped = SkipCounter() if skipped is None else skipped
    split_path = root / SPLIT_FILES["test" if split == "test" else "train"]
    listed = _read_split_file(split_path)
    if split != "test":
        listed = [entry for entry in listed if belongs_to(entry.dish_id, split, val_fraction)]
    if not listed:
        extra = f" with val_fraction={val_fraction}" if split != "test" else ""
        raise DataFormatError(f"{split_path}: no dish ids for split {split!r}{extra}")
    metadata = read_nutrition5k_metadata(root)

    records = []
    for entry in progress(listed, f"reading Nutrition5k {split}", "dish"):
        try:
            record = _record_for(entry, metadata, root)
        except _DishProblem as problem:
            report_bad_record(problem.error, problem.location, on_error, skipped, f"nutrition5k/{split}")
            continue
        if record is None:
            skipped[f"nutrition5k/{split}: no overhead image (normal in Nutrition5k)"] += 1
            continue
        records.append(record)
    if not records:
        raise DataFormatError(f"{split_path}: no usable dishes in split {split!r} (skipped: {skipped.report()})")
    return records


@dataclass(frozen=True)
class _SplitEntry:
    dish_id: str
    location: str  # "file:line", for messages
    duplicate_of: str | None = None  # location of the first listing of the same id


@dataclass(frozen=True)
class MetadataRow:
    """One dish's metadata row: its parsed record fields, or the error that made it unusable."""

    location: str  # "file:line"
    ingredients: tuple[Ingredient, ...] = ()
    nutrition: dict[str, float] | None = None
    error: DataFormatError | None = None


def _read_split_file(path: Path) -> list[_SplitEntry]:
    if not path.is_file():
        raise MissingFileError(f"Nutrition5k split file {path} does not exist (expected one dish id per line)")
    entries, first_seen = [], {}
    for line_number, line in enumerate(read_text(path).splitlines(), start=1):
        dish_id = line.strip()
        if not dish_id:
            continue
        location = f"{path}:{line_number}"
        entries.append(_SplitEntry(dish_id, location, first_seen.get(dish_id)))
        first_seen.setdefault(dish_id, location)
    return entries


class _DishProblem(Exception):
    """Why a listed dish cannot be used, and the ``file:line`` to point at (kept apart so skips group by reason)."""

    def __init__(self, location: str, error: DataFormatError):
        super().__init__(location, error)
        self.location, self.error = location, error


def _record_for(entry: _SplitEntry, metadata: dict[str, MetadataRow], root: Path) -> FoodRecord | None:
    """The record of one listed dish, or ``None`` when it has no overhead image (normal, not an error)."""
    if entry.duplicate_of is not None:
        raise _DishProblem(entry.location, DataFormatError(
            f"duplicate dish id: {entry.dish_id} is listed again in the split file (first at {entry.duplicate_of})"))
    row = metadata.get(entry.dish_id)
    if row is None:
        raise _DishProblem(entry.location, DataFormatError(
            f"unknown dish: {entry.dish_id!r} is in the split file but in neither {' nor '.join(METADATA_FILES)}"))
    if row.error is not None:
        raise _DishProblem(row.location, row.error)
    image = overhead_image(root, entry.dish_id)
    if not image.exists():
        return None
    try:
        check_image(image)
    except DataFormatError as error:
        raise _DishProblem(entry.location, error) from None
    return FoodRecord(id=entry.dish_id, image=str(image), dataset="nutrition5k", ingredients=row.ingredients,
                      nutrition=row.nutrition)


def read_nutrition5k_metadata(root: str | Path) -> dict[str, MetadataRow]:
    """Every dish row of both cafe files by dish id, each parsed or carrying the error that makes it unusable.

    Errors are kept rather than raised so that the caller reports them only for the dishes a split uses. A dish id in
    more than one row (within a file or across the two cafes) marks every copy unusable: nothing says which is right.
    Rows whose first field is not a dish id cannot belong to any dish; they are logged, once per call.
    """
    root = Path(root)
    rows: dict[str, MetadataRow] = {}
    orphans: list[str] = []
    for relative in METADATA_FILES:
        path = root / relative
        if not path.is_file():
            raise MissingFileError(f"Nutrition5k metadata file {path} does not exist (the release has "
                                   f"{' and '.join(METADATA_FILES)})")
        # Decoded up front so that a non-UTF-8 file is one clear error, not a failure halfway through the rows.
        reader = csv.reader(io.StringIO(read_text(path), newline=""))
        try:
            for fields in reader:
                location = f"{path}:{reader.line_num}"
                if not any(field.strip() for field in fields):
                    continue
                dish_id = fields[0].strip()
                if not _DISH_ID.fullmatch(dish_id):
                    orphans.append(f"{location}: expected a dish id like dish_1561662216 in field 1, found "
                                   f"{dish_id!r}")
                    continue
                row = _parse_row(fields, location)
                if dish_id in rows:
                    first = rows[dish_id].location
                    error = DataFormatError(f"duplicate dish id: {dish_id} has rows at {first} and {location}")
                    row = MetadataRow(first, error=error)
                rows[dish_id] = row
        except csv.Error as error:
            raise DataFormatError(f"{path}:{reader.line_num}: malformed CSV: {error}") from None
    if orphans:
        log.warning("Nutrition5k metadata: %d row(s) without a dish id were not read, e.g. %s", len(orphans),
                    orphans[0])
    return rows


def _parse_row(fields: list[str], location: str) -> MetadataRow:
    try:
        ingredients, nutrition = _parse_fields([field.strip() for field in fields])
    except DataFormatError as error:
        return MetadataRow(location, error=error)
    return MetadataRow(location, ingredients=ingredients, nutrition=nutrition)


def _parse_fields(fields: list[str]) -> tuple[tuple[Ingredient, ...], dict[str, float]]:
    # Some CSV writers end each line with a separator; an empty last field carries nothing, so it is not counted.
    while len(fields) > len(DISH_COLUMNS) and not fields[-1]:
        fields = fields[:-1]
    extra = len(fields) - len(DISH_COLUMNS)
    if extra < 0 or extra % len(INGREDIENT_COLUMNS):
        raise DataFormatError(f"wrong number of fields: found {len(fields)}, expected {len(DISH_COLUMNS)} dish "
                              f"fields plus {len(INGREDIENT_COLUMNS)} per ingredient (6 + 7k)")
    if extra == 0:
        raise DataFormatError(f"no ingredients: the row has only the {len(DISH_COLUMNS)} dish fields")
    totals = {column: _number(fields[index], index, column) for index, column in enumerate(DISH_COLUMNS) if index}
    nutrition = {_COLUMN_FIELD[column]: value for column, value in totals.items()}
    nutrition = {key: nutrition[key] for key in NUTRITION_FIELDS}  # the order every reader uses
    weighed = [_parse_ingredient(fields, start) for start in range(len(DISH_COLUMNS), len(fields),
                                                                   len(INGREDIENT_COLUMNS))]
    # The same ingredient can be weighed in twice in one dish; answers list it once, with the total weight.
    return merge_ingredients(weighed, key=lambda name: normalize_ingredient(name) or name), nutrition


def _parse_ingredient(fields: list[str], start: int) -> tuple[str, float]:
    ordinal = (start - len(DISH_COLUMNS)) // len(INGREDIENT_COLUMNS) + 1
    ingredient_id, name = fields[start], fields[start + 1]
    if not _INGREDIENT_ID.fullmatch(ingredient_id):
        # Usually a sign that an earlier field was split or dropped, so everything after it is shifted.
        raise DataFormatError(f"misaligned ingredient: field {start + 1} (ingr_id of ingredient {ordinal}) is "
                              f"{ingredient_id!r}, expected an id like ingr_0000000508")
    if not name:
        raise DataFormatError(f"empty ingredient name: field {start + 2} (ingr_name of ingredient {ordinal}, "
                              f"{ingredient_id}) is empty")
    values = [_number(fields[start + offset], start + offset, INGREDIENT_COLUMNS[offset], f"{name!r}")
              for offset in range(2, len(INGREDIENT_COLUMNS))]
    return name, values[0]


def _number(text: str, index: int, column: str, ingredient: str | None = None) -> float:
    """A field's value, checked against the nutrition limits; ``index`` is 0-based, messages count from 1."""
    where = f"field {index + 1} ({column}{' of ' + ingredient if ingredient else ''})"
    reason = "bad ingredient value" if ingredient else BAD_NUTRITION_VALUE
    return nutrient_value(text, where, NUTRITION_LIMITS[_COLUMN_FIELD[column]], reason, text=True)
