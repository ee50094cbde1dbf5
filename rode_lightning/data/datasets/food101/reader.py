"""Reader for Food-101 in its released layout.

The release (Bossard, Guillaumin and Van Gool, ECCV 2014) unpacks to ``food-101/``; that directory is the root, read
as published so that a downloaded copy works without conversion::

    root/images/<class>/<image id>.jpg
    root/meta/classes.txt      one class name per line, e.g. apple_pie (101 lines)
    root/meta/labels.txt       the display name of each class, same order, e.g. Apple pie
    root/meta/train.txt        one image per line, <class>/<image id> without extension (750 per class)
    root/meta/test.txt         (250 per class)
    root/meta/train.json       the same lists by class: {"apple_pie": ["apple_pie/1005649", ...], ...}
    root/meta/test.json

A split's ``.txt`` list is read when present, else its ``.json`` (copies that kept only one of the two work too).
Food-101 labels the category only, so that is all a record carries: the display name from ``labels.txt``
lower-cased (``apple pie``), or, in a copy without ``labels.txt``, the class name with underscores read as spaces.

**Validation.** Food-101 has no validation split: ``val`` is the share ``val_fraction`` of the train list chosen by
:func:`~rode_lightning.data.splits.is_held_out` on each ``<class>/<image id>`` entry, and ``train`` is the rest.

**Bad input.** What every image of a split depends on (the class list, ``labels.txt``, the split list as a file)
stops the read in both ``on_error`` modes: a missing file is a :class:`FileNotFoundError` saying what the release
has, a malformed one a :class:`DataFormatError` naming the file and line. A problem of one listed image is that
image's: ``raise`` names where it is listed (``file:line``, or ``file["class"][index]`` in a ``.json`` list) and
``skip`` counts it by reason. A listed image is checked in this order: malformed entry, listed twice, unknown class,
listed under another class (``.json`` only), missing image, unreadable image; the first problem found is reported.
Images are decoded in full (:func:`~rode_lightning.data.images.check_image`), as JPEG needs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from rode_lightning.data.errors import DataFormatError, OnError, SkipCounter, check_on_error, report_bad_record
from rode_lightning.data.images import check_image
from rode_lightning.data.records import FoodRecord
from rode_lightning.data.splits import DEFAULT_VAL_FRACTION, belongs_to, check_fraction, check_split
from rode_lightning.data.text_files import read_text
from rode_lightning.progress import progress
from rode_lightning.user_errors import MissingFileError

CLASSES_FILE = "meta/classes.txt"
LABELS_FILE = "meta/labels.txt"
# Each released split as a list; val has none of its own.
SPLIT_LISTS: dict[str, tuple[str, str]] = {"train": ("meta/train.txt", "meta/train.json"),
                                           "test": ("meta/test.txt", "meta/test.json")}
_CLASS_NAME = re.compile(r"[^/\s]+")
_ENTRY = re.compile(r"([^/\s]+)/([^/\s]+)")


def image_path(root: str | Path, entry: str) -> Path:
    """Where the release keeps the image of a ``<class>/<image id>`` list entry."""
    return Path(root) / "images" / f"{entry}.jpg"


def read_food101_split(root: str | Path, split: str, on_error: OnError = "raise",
                       skipped: SkipCounter | None = None,
                       val_fraction: float = DEFAULT_VAL_FRACTION) -> list[FoodRecord]:
    """The usable images of ``split`` (``train``, ``val`` or ``test``), in list order, as category-only records.

    ``train`` and ``val`` partition the train list by :func:`~rode_lightning.data.splits.is_held_out` on each entry
    with ``val_fraction``; ``test`` is the test list. Record ids are the list entries (``apple_pie/1005649``). Skips
    are counted in ``skipped`` under ``food101/<split>: <reason>``.
    """
    check_on_error(on_error)
    check_split(split, "Food-101")
    check_fraction(val_fraction)
    root = Path(root).absolute()
    if not root.is_dir():
        raise MissingFileError(f"Food-101 root {root} does not exist or is not a directory")
    skipped = SkipCounter() if skipped is None else skipped
    categories = read_food101_classes(root)
    list_path, listed = _read_split_list(root, "test" if split == "test" else "train")
    if split != "test":
        listed = [entry for entry in listed if belongs_to(entry.text, split, val_fraction)]
    if not listed:
        extra = f" with val_fraction={val_fraction}" if split != "test" else ""
        raise DataFormatError(f"{list_path}: no images for split {split!r}{extra}")

    records = []
    for entry in progress(listed, f"reading Food-101 {split}", "image"):
        try:
            records.append(_record_for(entry, categories, root))
        except DataFormatError as error:
            report_bad_record(error, entry.location, on_error, skipped, f"food101/{split}")
    if not records:
        raise DataFormatError(f"{list_path}: no usable images in split {split!r} (skipped: {skipped.report()})")
    return records


def read_food101_classes(root: str | Path) -> dict[str, str]:
    """Each class of ``classes.txt``, in file order, with the category text its records carry."""
    root = Path(root)
    path = root / CLASSES_FILE
    if not path.is_file():
        nested = root / "food-101" / CLASSES_FILE
        hint = f"; {nested} exists: pass {nested.parent.parent} as the root" if nested.is_file() else ""
        raise MissingFileError(f"Food-101 class list {path} does not exist (the release has {CLASSES_FILE}, one "
                               f"class name per line){hint}")
    names: dict[str, int] = {}  # class -> line number
    for line_number, name in _read_lines(path, "class name"):
        if not _CLASS_NAME.fullmatch(name):
            raise DataFormatError(f"{path}:{line_number}: bad class name: {name!r}, expected a name without spaces "
                                  f"or slashes, e.g. apple_pie")
        if name in names:
            raise DataFormatError(f"{path}:{line_number}: duplicate class: {name} is also on line {names[name]}")
        names[name] = line_number
    if not names:
        raise DataFormatError(f"{path}: no class names: expected one class name per line")
    labels_path = root / LABELS_FILE
    if not labels_path.is_file():
        return {name: name.replace("_", " ") for name in names}
    labels = [label for _, label in _read_lines(labels_path, "display name")]
    if len(labels) != len(names):
        # Matched by position, so a missing or extra line would give every later class the wrong name.
        raise DataFormatError(f"{labels_path}: wrong number of display names: found {len(labels)}, expected one "
                              f"per class of {CLASSES_FILE} ({len(names)}), in the same order")
    return {name: label.lower() for name, label in zip(names, labels)}


@dataclass(frozen=True)
class _ListEntry:
    text: str  # "<class>/<image id>" as listed
    location: str  # "file:line" or 'file["class"][index]', for messages
    listed_under: str | None = None  # the class a .json list files the entry under
    duplicate_of: str | None = None  # location of the first listing of the same entry


def _read_split_list(root: Path, name: str) -> tuple[Path, list[_ListEntry]]:
    text_path, json_path = (root / relative for relative in SPLIT_LISTS[name])
    if text_path.is_file():
        path = text_path
        listed = [(f"{path}:{line_number}", line.strip(), None)
                  for line_number, line in enumerate(read_text(path).splitlines(), start=1) if line.strip()]
    elif json_path.is_file():
        path = json_path
        listed = _read_json_list(path)
    else:
        raise MissingFileError(f"Food-101 split list {text_path} does not exist, nor {json_path} (the release has "
                               f"both, one <class>/<image id> entry per image)")
    entries, first_seen = [], {}
    for location, text, listed_under in listed:
        entries.append(_ListEntry(text, location, listed_under, first_seen.get(text)))
        first_seen.setdefault(text, location)
    return path, entries


def _read_json_list(path: Path) -> list[tuple[str, str, str]]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}:{error.lineno}: malformed JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: malformed list: expected a JSON object mapping each class to its entries, "
                              f"found a {type(data).__name__}")
    listed = []
    for key, items in data.items():
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise DataFormatError(f"{path}: malformed list: the value of {key!r} is not a list of "
                                  f"\"<class>/<image id>\" strings")
        listed += [(f"{path}[{json.dumps(key)}][{index}]", item.strip(), key) for index, item in enumerate(items)]
    return listed


def _record_for(entry: _ListEntry, categories: dict[str, str], root: Path) -> FoodRecord:
    match = _ENTRY.fullmatch(entry.text)
    if match is None or match[2].lower().endswith(".jpg"):
        raise DataFormatError(f"malformed entry: {entry.text!r}, expected <class>/<image id> without extension, "
                              f"e.g. apple_pie/1005649")
    if entry.duplicate_of is not None:
        raise DataFormatError(f"duplicate entry: {entry.text} is listed again (first at {entry.duplicate_of})")
    class_name = match[1]
    if class_name not in categories:
        raise DataFormatError(f"unknown class: {class_name!r} is not a line of {CLASSES_FILE}")
    if entry.listed_under is not None and entry.listed_under != class_name:
        raise DataFormatError(f"misfiled entry: {entry.text} is listed under {entry.listed_under!r}, expected "
                              f"under its own class {class_name!r}")
    image = image_path(root, entry.text)
    check_image(image)
    return FoodRecord(id=entry.text, image=str(image), dataset="food101", category=categories[class_name])


def _read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """The stripped lines of a one-name-per-line file with their numbers; blank lines are allowed only at the end,
    since these files are matched line by line and a gap would shift every later name."""
    lines = [line.strip() for line in read_text(path).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for line_number, line in enumerate(lines, start=1):
        if not line:
            raise DataFormatError(f"{path}:{line_number}: empty {what}: expected one {what} per line")
    return list(enumerate(lines, start=1))
