"""Reader for VIREO Food-172 in its released layout.

The release (Chen and Ngo, ACM Multimedia 2016) is read as published, so a downloaded copy works without conversion::

    root/ready_chinese_food/<class number>/<image>.jpg     class numbers 1..172
    root/SplitAndIngreLabel/TR.txt              one image per line, written /<class number>/<image>.jpg relative
    root/SplitAndIngreLabel/VAL.txt             to ready_chinese_food, e.g. /1/10_0.jpg
    root/SplitAndIngreLabel/TE.txt
    root/SplitAndIngreLabel/FoodList.txt        class names: line k names class k
    root/SplitAndIngreLabel/IngredientList.txt  ingredient names: line j names value j of a label line
    root/SplitAndIngreLabel/IngreLabel.txt      one line per image: its path as in the split files, then one value
                                                per ingredient, 1 (present) or -1 (absent)

``train``, ``val`` and ``test`` are ``TR.txt``, ``VAL.txt`` and ``TE.txt``. A record's category is its class's
FoodList name and its ingredients are the names of the values that are 1, in IngredientList order; the release has
no weights, so every ingredient has 0.0 grams (answers list names only). Record ids are image paths relative to
``ready_chinese_food`` without the leading slash (``1/10_0.jpg``).

What could not be confirmed against the release and is assumed here: the fields of a label line are separated by
white space of any length (third-party loaders disagree on one space or more); a path written with or without the
leading slash names the same image; names in FoodList.txt and IngredientList.txt are served as written, stripped
of surrounding white space. The number of ingredients is never fixed here (353 in the release): it is the number of
lines of IngredientList.txt, and a label line with another number of values is an error.

**Bad input.** The name lists and IngreLabel.txt as files stop the read in both ``on_error`` modes: a missing file
is a :class:`FileNotFoundError` saying what the release has, an unreadable or gapped one a :class:`DataFormatError`
naming the file and line. A problem of one listed image is that image's and is reported only when a split lists it:
``raise`` names the file and line (and the value), ``skip`` counts it by reason. A listed image is checked in this
order: malformed path, listed twice in the split file, class number outside FoodList.txt, bad label line (wrong
number of values, a value other than 1 or -1, two label lines that disagree), missing image, unreadable image.

Two cases are not errors, since the category is still known: an image with no label line, and one whose label line
marks no ingredient present. Both are served with the category only (the ingredients task is not built for them)
and counted in ``skipped`` under their reason in both modes, so that the data module reports them.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rode_lightning.data.errors import DataFormatError, OnError, SkipCounter, check_on_error, report_bad_record
from rode_lightning.data.images import check_image
from rode_lightning.data.records import FoodRecord, Ingredient
from rode_lightning.data.splits import check_split
from rode_lightning.data.text_files import read_text
from rode_lightning.progress import progress
from rode_lightning.user_errors import MissingFileError

log = logging.getLogger(__name__)

IMAGE_DIR = "ready_chinese_food"
LABEL_DIR = "SplitAndIngreLabel"
SPLIT_FILES: dict[str, str] = {"train": f"{LABEL_DIR}/TR.txt", "val": f"{LABEL_DIR}/VAL.txt",
                               "test": f"{LABEL_DIR}/TE.txt"}
SPLITS: tuple[str, ...] = tuple(SPLIT_FILES)
FOOD_LIST = f"{LABEL_DIR}/FoodList.txt"
INGREDIENT_LIST = f"{LABEL_DIR}/IngredientList.txt"
LABEL_FILE = f"{LABEL_DIR}/IngreLabel.txt"
NO_LABEL = "no ingredient label in IngreLabel.txt (served with category only)"
NO_INGREDIENT = "no ingredient marked present (served with category only)"

_IMAGE_PATH = re.compile(r"/?(\d+)/([^/\s]+)")
_VALUES = frozenset({"1", "-1"})


def image_path(root: str | Path, image: str) -> Path:
    """Where the release keeps an image named as in the split files (``/1/10_0.jpg`` or ``1/10_0.jpg``)."""
    return Path(root) / IMAGE_DIR / image.removeprefix("/")


def read_vireo172_split(root: str | Path, split: str, on_error: OnError = "raise",
                        skipped: SkipCounter | None = None) -> list[FoodRecord]:
    """The usable images of ``split`` (``train``, ``val`` or ``test``), in split-file order.

    Skips, and images served with the category only, are counted in ``skipped`` under ``vireo172/<split>: <reason>``.
    """
    check_on_error(on_error)
    check_split(split, "VIREO Food-172")
    root = Path(root).absolute()
    if not root.is_dir():
        raise MissingFileError(f"VIREO Food-172 root {root} does not exist or is not a directory")
    skipped = SkipCounter() if skipped is None else skipped
    split_path = root / SPLIT_FILES[split]
    listed = _read_split_file(split_path)
    if not listed:
        raise DataFormatError(f"{split_path}: no images for split {split!r}")
    classes = read_name_list(root / FOOD_LIST, "class name")
    ingredients = read_name_list(root / INGREDIENT_LIST, "ingredient name")
    repeated = sorted(name for name, count in Counter(ingredients).items() if count > 1)
    if repeated:
        log.warning("%s names %d ingredient(s) on more than one line, e.g. %r; records list each name once",
                    root / INGREDIENT_LIST, len(repeated), repeated[0])
    labels = read_vireo172_labels(root, ingredients)

    records = []
    for entry in progress(listed, f"reading VIREO Food-172 {split}", "image"):
        try:
            record, note = _record_for(entry, classes, ingredients, labels, root)
        except _ImageProblem as problem:
            report_bad_record(problem.error, problem.location, on_error, skipped, f"vireo172/{split}")
            continue
        if note is not None:
            skipped[f"vireo172/{split}: {note}"] += 1
        records.append(record)
    if not records:
        raise DataFormatError(f"{split_path}: no usable images in split {split!r} (skipped: {skipped.report()})")
    return records


def read_name_list(path: Path, what: str) -> list[str]:
    """The names of FoodList.txt or IngredientList.txt, line k at index k - 1.

    Blank lines are allowed only at the end: names are matched by line number, so a gap would shift all later ones.
    """
    if not path.is_file():
        raise MissingFileError(f"VIREO Food-172 file {path} does not exist (the release has {FOOD_LIST} and "
                               f"{INGREDIENT_LIST}, one name per line)")
    names = [line.strip() for line in read_text(path).splitlines()]
    while names and not names[-1]:
        names.pop()
    for line_number, name in enumerate(names, start=1):
        if not name:
            raise DataFormatError(f"{path}:{line_number}: empty {what}: expected one {what} per line")
    if not names:
        raise DataFormatError(f"{path}: no {what}s: expected one {what} per line")
    return names


@dataclass(frozen=True)
class LabelLine:
    """One image's label line: the columns marked present, or the error that made the line unusable."""

    location: str  # "file:line"
    present: tuple[int, ...] = ()  # 0-based columns whose value is 1
    error: DataFormatError | None = None


def read_vireo172_labels(root: str | Path, ingredients: list[str]) -> dict[str, LabelLine]:
    """Every line of IngreLabel.txt by image (path without the leading slash), parsed or carrying its error.

    Errors are kept rather than raised so that only the images a split lists report them. An image with two lines
    that disagree is unusable (nothing says which is right); two identical lines are one label.
    """
    path = Path(root) / LABEL_FILE
    if not path.is_file():
        raise MissingFileError(f"VIREO Food-172 label file {path} does not exist (the release has {LABEL_FILE}: "
                               f"one line per image, its path then 1 or -1 per ingredient)")
    labels: dict[str, LabelLine] = {}
    for line_number, line in enumerate(read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        location = f"{path}:{line_number}"
        image = fields[0].removeprefix("/")
        label = _parse_label(fields[1:], ingredients, location)
        first = labels.get(image)
        if first is not None and (first.error is not None or label.error is not None or first.present !=
                                  label.present):
            label = LabelLine(first.location, error=DataFormatError(
                f"conflicting labels: {fields[0]} has label lines at {first.location} and {location} that differ"))
        labels[image] = label if first is None or label.error is not None else first
    return labels


def _parse_label(values: list[str], ingredients: list[str], location: str) -> LabelLine:
    if len(values) != len(ingredients):
        return LabelLine(location, error=DataFormatError(
            f"wrong number of values: found {len(values)} after the image path, expected {len(ingredients)} (one "
            f"per line of {INGREDIENT_LIST})"))
    if not _VALUES.issuperset(values):
        column = next(index for index, value in enumerate(values) if value not in _VALUES)
        return LabelLine(location, error=DataFormatError(
            f"bad label value: field {column + 2} (ingredient {column + 1}, {ingredients[column]!r}) is "
            f"{values[column]!r}, expected 1 (present) or -1 (absent)"))
    return LabelLine(location, present=tuple(index for index, value in enumerate(values) if value == "1"))


@dataclass(frozen=True)
class _SplitEntry:
    image: str  # as written in the split file
    location: str  # "file:line"
    duplicate_of: str | None = None  # location of the first listing of the same image


def _read_split_file(path: Path) -> list[_SplitEntry]:
    if not path.is_file():
        raise MissingFileError(f"VIREO Food-172 split file {path} does not exist (the release has "
                               f"{', '.join(SPLIT_FILES.values())}, one image path like /1/10_0.jpg per line)")
    entries, first_seen = [], {}
    for line_number, line in enumerate(read_text(path).splitlines(), start=1):
        image = line.strip()
        if not image:
            continue
        location, key = f"{path}:{line_number}", image.removeprefix("/")
        entries.append(_SplitEntry(image, location, first_seen.get(key)))
        first_seen.setdefault(key, location)
    return entries


class _ImageProblem(Exception):
    """Why a listed image cannot be used, and the ``file:line`` to point at (kept apart so skips group by reason)."""

    def __init__(self, location: str, error: DataFormatError):
        super().__init__(location, error)
        self.location, self.error = location, error


def _record_for(entry: _SplitEntry, classes: list[str], ingredients: list[str], labels: dict[str, LabelLine],
                root: Path) -> tuple[FoodRecord, str | None]:
    """The record of one listed image, and the reason it is served with the category only, if it is."""
    match = _IMAGE_PATH.fullmatch(entry.image)
    if match is None:
        raise _ImageProblem(entry.location, DataFormatError(
            f"malformed image path: {entry.image!r}, expected /<class number>/<file name> like /1/10_0.jpg"))
    if entry.duplicate_of is not None:
        raise _ImageProblem(entry.location, DataFormatError(
            f"duplicate image: {entry.image} is listed again in the split file (first at {entry.duplicate_of})"))
    class_number = int(match[1])
    if not 1 <= class_number <= len(classes):
        raise _ImageProblem(entry.location, DataFormatError(
            f"bad class number: {match[1]} in {entry.image} is not a line of {FOOD_LIST} (1 to {len(classes)})"))
    key = entry.image.removeprefix("/")
    label = labels.get(key)
    if label is not None and label.error is not None:
        raise _ImageProblem(label.location, label.error)
    image = image_path(root, key)
    try:
        check_image(image)
    except DataFormatError as error:
        raise _ImageProblem(entry.location, error) from None
    # The same name on two lines of IngredientList.txt would otherwise be listed twice in an answer.
    names = dict.fromkeys(ingredients[column] for column in label.present) if label is not None else {}
    record = FoodRecord(id=key, image=str(image), dataset="vireo172", category=classes[class_number - 1],
                        ingredients=tuple(Ingredient(name, 0.0) for name in names))
    note = NO_LABEL if label is None else NO_INGREDIENT if not names else None
    return record, note
