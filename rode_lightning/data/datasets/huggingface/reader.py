"""Reader for a local Hugging Face dataset whose columns the config maps to :class:`FoodRecord` fields.

Food datasets on the Hub (and anything a user builds with ``datasets``) come in two local forms: a folder written by
``save_to_disk`` (one ``Dataset`` or a ``DatasetDict``), or parquet files, as the Hub stores them. Their column
names differ from dataset to dataset, so a :class:`HuggingFaceSource` names which column holds the image, the
category, the ingredients, the recipe, each nutrition field, or ready-made question/answer pairs
(``FoodRecord.conversations``). Nothing is downloaded: the path must be local.

**Images.** An ``Image`` column is never copied into the records: a dataset can hold 100,000 photos. A record holds
a :class:`DatasetImage` (path, split, row, column) that reads its row again when opened; the dataset is loaded once
per process and its arrow files are memory-mapped, so that costs a page fault, not a copy. A string image column
holds file paths, relative to the dataset folder or absolute, and records get absolute path strings.

**Parquet.** Files are grouped into splits by name, as the Hub does: a file (or a folder on its way) whose name
starts with a split name followed by a non-letter (``train-00000-of-00002.parquet``, ``test.parquet``,
``validation/0.parquet``) belongs to that split. When no file names a split, all of them are one split that is our
``train`` (as a single saved ``Dataset`` is), whatever ``splits`` says. ``datasets`` converts parquet to an arrow
copy in its cache (``HF_DATASETS_CACHE``) the first time, then memory-maps that copy. Finding the files and
splits, and loading them once per process, is ``huggingface_files.py``'s part.

**Checks.** The config is checked before any row is read, each problem in one line naming its key
(``data.huggingface[0].category: column 'dish' is not in ...``), including a column whose type cannot hold the field.
Rows are then checked as the other readers check theirs (:mod:`rode_lightning.data.errors`): an empty value, a
nutrition value that is not a finite number within :data:`~rode_lightning.data.nutrients.NUTRITION_LIMITS`, a missing or
unreadable image, a repeated id, each named by path, split, row and column, or skipped and counted. Every mapped column
must have a value in every row: a dataset with gaps is read with ``on_error="skip"``.

**Splits.** Ours are ``train``, ``val`` and ``test``; by default they are the dataset's ``train``, ``validation`` (or
``val``) and ``test``. A dataset without a validation split has one carved out of ``train`` by
:func:`~rode_lightning.data.splits.is_held_out` on the record id; one without a test split is an error.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rode_lightning.data.errors import DataFormatError, OnError, SkipCounter, check_on_error, report_bad_record
from rode_lightning.data.datasets.huggingface.files import (EXPECTED_PATH, SPLITS, DatasetLayout, dataset_split_for,
                                                   datasets_progress, find_layout, image_view, split_dataset,
                                                   undecoded_rows)
from rode_lightning.conventions import NUTRITION_FIELDS, TASKS, normalize_ingredient
from rode_lightning.data.images import check_image
from rode_lightning.data.records import FoodRecord, merge_ingredients
from rode_lightning.data.splits import DEFAULT_VAL_FRACTION, belongs_to, check_fraction, check_split
from rode_lightning.data.nutrients import NUTRITION_LIMITS, nutrient_value
from rode_lightning.progress import progress
from rode_lightning.user_errors import UserError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

_FIELD_TASKS: tuple[str, ...] = ("category", "ingredients", "recipe", "nutrition")  # config fields named like tasks


@dataclass
class HuggingFaceSource:
    """Where a local Hugging Face dataset is and which of its columns hold what (a ``data.huggingface`` entry).

    Args:
        path: a folder written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``), a folder of parquet files,
            one parquet file, or a glob of parquet files.
        name: the dataset name records and results are reported under; a plain identifier.
        image: the image column: an ``Image`` feature, or strings with file paths relative to ``path`` (to the
            folder holding it when ``path`` is a file or a glob) or absolute.
        id: a column with each row's id (strings or integers); without it, ids are ``<dataset split>/<row>``.
        splits: our split (``train``, ``val``, ``test``) -> the dataset's split name, for the splits whose names
            differ from :data:`~rode_lightning.data.datasets.huggingface.files.DEFAULT_SPLIT_NAMES`.
        category: a string or ``ClassLabel`` column (read as the label's name).
        ingredients: a list-of-strings column, or a string column of comma-separated names.
        recipe: a list-of-strings column with one step each, or a string column with one step per line.
        nutrition: our field (``mass_g``, ``energy_kcal``, ``fat_g``, ``carbohydrate_g``, ``protein_g``) -> a
            numeric column (or strings holding numbers); fields not given are absent from the records.
        conversations: task -> ``{"question": column, "answer": column}`` for datasets that hold their own
            instruction texts; that task is asked and answered with them (``FoodRecord.conversations``).
    """

    path: str
    name: str = "huggingface"
    image: str = "image"
    id: str | None = None
    splits: dict[str, str] | None = None
    category: str | None = None
    ingredients: str | None = None
    recipe: str | None = None
    nutrition: dict[str, str] | None = None
    conversations: dict[str, dict[str, str]] | None = None


@dataclass(frozen=True)
class DatasetImage:
    """One row's image in a dataset's ``Image`` column: a few strings and a number, so records pickle small.

    ``files`` are the parquet files of the split (empty for a ``save_to_disk`` folder): with them a fresh process
    (a data-loader worker) loads the same split without knowing the config that grouped the files.
    """

    path: str  # the source's path, absolute
    split: str  # the dataset's split name
    row: int
    column: str
    files: tuple[str, ...] = field(default=(), repr=False)

    def open(self) -> Image.Image:
        """The decoded image (already loaded, so there is no file to close)."""
        with datasets_progress():
            image = image_view(self.path, self.split, self.column, self.files)[self.row][self.column]
        if image is None:
            raise DataFormatError(f"missing image: {self} is empty")
        return image

    def __str__(self) -> str:
        return f"{self.path} split {self.split!r} row {self.row} column {self.column!r}"


def read_huggingface_split(source: HuggingFaceSource, split: str, on_error: OnError = "raise",
                           skipped: SkipCounter | None = None, val_fraction: float = DEFAULT_VAL_FRACTION,
                           key: str = "data.huggingface") -> list[FoodRecord]:
    """The usable rows of our ``split`` (``train``, ``val`` or ``test``) as records, in row order.

    Without a validation split in the dataset, ``train`` and ``val`` partition the dataset's ``train`` split by
    :func:`~rode_lightning.data.splits.is_held_out` on the record id with ``val_fraction``. ``key`` is the config
    key config errors are reported under (``data.huggingface[0]``). Skips are counted in ``skipped`` under
    ``<name>/<split>: <reason>``.
    """
    check_on_error(on_error)
    check_split(split, source.name)
    check_fraction(val_fraction)
    skipped = SkipCounter() if skipped is None else skipped
    layout = _prepare(source, key)
    dataset_split, keep = dataset_split_for(layout, source.splits, split, key)
    if keep is not None:
        log.info("%s (%s) has no validation split: %s is the %s of its %r split, held out by a hash of the record "
                 "id with val_fraction=%s", source.name, layout.path, split,
                 "held-out share" if keep else "rest", dataset_split, val_fraction)
    held_out = val_fraction if keep is not None else None
    with datasets_progress():
        records = _read_rows(source, layout, dataset_split, split, held_out, on_error, skipped)
    if not records:
        extra = f" with val_fraction={val_fraction}" if keep is not None else ""
        raise DataFormatError(f"{layout.path} split {dataset_split!r}: no usable records for split {split!r}{extra} "
                              f"(skipped: {skipped.report()})")
    return records


def _read_rows(source: HuggingFaceSource, layout: DatasetLayout, dataset_split: str, split: str,
               held_out: float | None, on_error: OnError, skipped: SkipCounter) -> list[FoodRecord]:
    """The usable rows of ``dataset_split`` served as our ``split``; with ``held_out`` (a share), only those on
    ``split``'s side of the hold-out. A row without an id cannot be placed: it is train's, and reported there."""
    dataset = split_dataset(layout.path, dataset_split, layout.files[dataset_split])
    features = dataset.features  # a fresh deep copy on every access: taken once, not per row
    rows = undecoded_rows(dataset, _columns(source))
    records, seen = [], {}
    for row, example in enumerate(progress(rows, f"reading {source.name} {split}", "row", total=len(dataset))):
        location = f"{layout.path} split {dataset_split!r} row {row}"
        try:
            record_id = _record_id(example, source, dataset_split, row)
        except DataFormatError as error:
            if held_out is None or split != "val":
                report_bad_record(error, location, on_error, skipped, f"{source.name}/{split}")
            continue
        if held_out is not None and not belongs_to(record_id, split, held_out):
            continue
        try:
            if record_id in seen:
                raise DataFormatError(f"duplicate id: {record_id!r} (column {source.id!r}) is also row "
                                      f"{seen[record_id]}")
            seen[record_id] = row
            records.append(_parse_row(example, record_id, source, layout, features, dataset_split, row))
        except DataFormatError as error:
            report_bad_record(error, location, on_error, skipped, f"{source.name}/{split}")
    return records


def check_huggingface_source(source: HuggingFaceSource, key: str = "data.huggingface") -> None:
    """Check ``source`` against its dataset before any row is read; every problem is one ``ValueError`` line naming
    its key (``key`` is where the config holds it, ``data.huggingface[0]``), a missing path a ``FileNotFoundError``.

    Loads the dataset (memory-mapped; parquet is converted once into the ``datasets`` cache), which the reader then
    finds loaded.
    """
    _prepare(source, key)


def _prepare(source: HuggingFaceSource, key: str) -> DatasetLayout:
    """:func:`check_huggingface_source`, returning where each split is."""
    _check_config(source, key)
    with datasets_progress():
        layout = find_layout(source.path, source.splits, key)
        splits = {name: split_dataset(layout.path, name, files) for name, files in layout.files.items()}
    for our_split, name in (source.splits or {}).items():
        if name not in splits and (layout.named or our_split != "train"):
            raise UserError(f"{key}.splits.{our_split}: split {name!r} is not in {layout.path} "
                            f"(splits: {', '.join(splits)})")
    for column_key, column, accepts, expected in _column_checks(source):
        for split_name, dataset in splits.items():
            where = f"{layout.path}" + (f" split {split_name!r}" if len(splits) > 1 else "")
            if column not in dataset.features:
                raise UserError(f"{key}.{column_key}: column {column!r} is not in {where} "
                                f"(columns: {', '.join(dataset.features)})")
            if not accepts(dataset.features[column]):
                raise UserError(f"{key}.{column_key}: column {column!r} of {where} holds "
                                f"{dataset.features[column]!r}, expected {expected}")
    return layout


# ---------------------------------------------------------------------------------------------------------------------
# The config


def _check_config(source: HuggingFaceSource, key: str) -> None:
    if not isinstance(source.path, str) or not source.path:
        raise UserError(f"{key}.path: expected {EXPECTED_PATH}, got {source.path!r}")
    if not isinstance(source.name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", source.name):
        raise UserError(f"{key}.name: {source.name!r} is not a plain identifier (letters, digits and _, not "
                        f"starting with a digit)")
    for split, name in (source.splits or {}).items():
        if split not in SPLITS:
            raise UserError(f"{key}.splits: unknown split {split!r}; expected keys among {', '.join(SPLITS)}")
        if not isinstance(name, str) or not name:
            raise UserError(f"{key}.splits.{split}: expected the dataset's split name, got {name!r}")
    if source.nutrition is not None:
        if not source.nutrition:
            raise UserError(f"{key}.nutrition: maps no field; give field -> column for some of "
                            f"{', '.join(NUTRITION_FIELDS)}, or leave it out")
        for name in source.nutrition:
            if name not in NUTRITION_FIELDS:
                raise UserError(f"{key}.nutrition: unknown field {name!r}; expected among "
                                f"{', '.join(NUTRITION_FIELDS)}")
    for task, pair in (source.conversations or {}).items():
        if task not in TASKS:
            raise UserError(f"{key}.conversations: unknown task {task!r}; expected among {', '.join(TASKS)}")
        if not isinstance(pair, dict) or set(pair) != {"question", "answer"}:
            raise UserError(f"{key}.conversations.{task}: expected {{question: column, answer: column}}, got {pair!r}")
        if pair["question"] == pair["answer"]:
            raise UserError(f"{key}.conversations.{task}: column {pair['question']!r} is given twice, as question "
                            f"and as answer; expected two columns")
        if getattr(source, task) is not None:
            raise UserError(f"{key}.conversations.{task}: the task is also mapped by {key}.{task}; give one of "
                            f"them (the conversation would replace the {task} answer)")
    for name, value in [("image", source.image), ("id", source.id), *((task, getattr(source, task))
                                                                       for task in _FIELD_TASKS[:3])]:
        if value is not None and (not isinstance(value, str) or not value):
            raise UserError(f"{key}.{name}: expected a column name, got {value!r}")
    if not any(getattr(source, task) for task in _FIELD_TASKS) and not source.conversations:
        raise UserError(f"{key}: no task is mapped; give at least one of {', '.join(_FIELD_TASKS)} or "
                        f"conversations")


def _is_string(feature) -> bool:
    import datasets
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _is_strings(feature) -> bool:
    import datasets
    listed = isinstance(feature, (datasets.Sequence, datasets.LargeList)) and _is_string(feature.feature)
    return listed or _is_string(feature)


def _is_integer(feature) -> bool:
    import datasets
    return isinstance(feature, datasets.Value) and re.fullmatch(r"u?int\d+", feature.dtype) is not None


def _is_number(feature) -> bool:
    import datasets
    floating = isinstance(feature, datasets.Value) and re.fullmatch(r"float\d+", feature.dtype) is not None
    return floating or _is_integer(feature) or _is_string(feature)


def _is_image(feature) -> bool:
    import datasets
    return isinstance(feature, datasets.Image) or _is_string(feature)


def _is_label(feature) -> bool:
    import datasets
    return isinstance(feature, datasets.ClassLabel) or _is_string(feature)


def _is_id(feature) -> bool:
    return _is_integer(feature) or _is_string(feature)


def _column_checks(source: HuggingFaceSource):
    """(config key, column, accepts(feature), what is expected) for every column the config names."""
    yield "image", source.image, _is_image, "an Image feature or a string column of file paths"
    if source.id is not None:
        yield "id", source.id, _is_id, "a string or integer column"
    if source.category is not None:
        yield "category", source.category, _is_label, "a string or ClassLabel column"
    for task in ("ingredients", "recipe"):
        if getattr(source, task) is not None:
            yield task, getattr(source, task), _is_strings, "a list-of-strings or a string column"
    for name, column in (source.nutrition or {}).items():
        yield f"nutrition.{name}", column, _is_number, "a numeric column (or strings holding numbers)"
    for task, pair in (source.conversations or {}).items():
        for role in ("question", "answer"):
            yield f"conversations.{task}.{role}", pair[role], _is_string, "a string column"


def _columns(source: HuggingFaceSource) -> list[str]:
    columns = [source.image, source.id, source.category, source.ingredients, source.recipe,
               *(source.nutrition or {}).values(),
               *(column for pair in (source.conversations or {}).values() for column in pair.values())]
    return list(dict.fromkeys(column for column in columns if column is not None))


# ---------------------------------------------------------------------------------------------------------------------
# Rows


def _record_id(example: dict, source: HuggingFaceSource, dataset_split: str, row: int) -> str:
    if source.id is None:
        return f"{dataset_split}/{row}"
    value = example[source.id]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataFormatError(f"empty value: column {source.id!r} (id) is {value!r}")
    return str(value)


def _parse_row(example: dict, record_id: str, source: HuggingFaceSource, layout: DatasetLayout,
               features: datasets.Features, dataset_split: str, row: int) -> FoodRecord:
    fields: dict[str, Any] = {}
    if source.category is not None:
        fields["category"] = _category(example[source.category], source.category, features[source.category])
    if source.ingredients is not None:
        names = _texts(example[source.ingredients], source.ingredients, "ingredients", separator=",")
        # Answers list each ingredient once; the dataset gives no grams, so its order is kept.
        fields["ingredients"] = merge_ingredients(((name, 0.0) for name in names),
                                                  key=lambda name: normalize_ingredient(name) or name)
    if source.recipe is not None:
        fields["recipe"] = _texts(example[source.recipe], source.recipe, "recipe", separator="\n")
    if source.nutrition is not None:
        fields["nutrition"] = {name: _nutrient(example[source.nutrition[name]], source.nutrition[name], name)
                               for name in NUTRITION_FIELDS if name in source.nutrition}
    if source.conversations:
        fields["conversations"] = {
            task: tuple(_text(example[pair[role]], pair[role], f"{task} {role}") for role in ("question", "answer"))
            for task, pair in source.conversations.items()}
    # Last, because it is the one check that reads the image.
    image = _image(example[source.image], source, layout, features[source.image], dataset_split, row)
    check_image(image)
    return FoodRecord(id=record_id, image=image, dataset=source.name, **fields)


def _text(value, column: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"empty value: column {column!r} ({what}) is {value!r}")
    return value.strip()


def _category(value, column: str, feature) -> str:
    import datasets
    if isinstance(feature, datasets.ClassLabel):
        if value is None or value < 0:  # datasets writes -1 for a row without a label
            raise DataFormatError(f"empty value: column {column!r} (category) is {value!r}, not a label")
        value = feature.int2str(value)
    return _text(value, column, "category")


def _texts(value, column: str, what: str, separator: str) -> tuple[str, ...]:
    """A list of strings, or one string split at ``separator``; blank items are left out, but not all of them."""
    items = value.split(separator) if isinstance(value, str) else value or []
    texts = tuple(item.strip() for item in items if item is not None and item.strip())
    if not texts:
        raise DataFormatError(f"empty value: column {column!r} ({what}) is {value!r}")
    return texts


def _nutrient(value, column: str, name: str) -> float:
    where = f"column {column!r} (nutrition {name})"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataFormatError(f"empty value: {where} is {value!r}")
    return nutrient_value(value, where, NUTRITION_LIMITS[name], text=True)


def _image(value, source: HuggingFaceSource, layout: DatasetLayout, feature, dataset_split: str,
           row: int) -> str | DatasetImage:
    import datasets
    if isinstance(feature, datasets.Image):
        if value is None or (value.get("bytes") is None and value.get("path") is None):
            raise DataFormatError(f"missing image: column {source.image!r} is empty")
        return DatasetImage(layout.path, dataset_split, row, source.image, layout.files[dataset_split])
    if value is None or not value.strip():
        raise DataFormatError(f"missing image: column {source.image!r} is {value!r}, expected a file path")
    return str(layout.base / value)  # an absolute value stays as it is
