"""Finding and loading a local Hugging Face dataset for :mod:`rode_lightning.data.datasets.huggingface.reader`: which
kind of dataset a path is (a ``save_to_disk`` folder, parquet files or a glob of them), which files make up each
split (named as the Hub names them), which of the dataset's splits each of ours is read from, and the per-process
cache of the loaded (memory-mapped) datasets that records' images are read through again.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ``datasets`` (with pandas and pyarrow, about a second) is imported in the functions that read a dataset, not with
# the package: every command would pay for it otherwise (reader.py and demo.py do the same).

from rode_lightning.data.errors import MissingSplitError
from rode_lightning.data.splits import SPLITS
from rode_lightning.user_errors import MissingFileError, UserError

DEFAULT_SPLIT_NAMES: dict[str, tuple[str, ...]] = {"train": ("train",), "val": ("validation", "val"),
                                                   "test": ("test",)}
"""The dataset's split names tried for each of ours, in order, where ``splits`` does not name one."""

UNNAMED_SPLIT = "train"  # what the one split of a dataset without split names is called, in ids and messages
EXPECTED_PATH = ("a folder written by save_to_disk, a folder of parquet files, a parquet file or a glob of parquet "
                 "files")


@dataclass(frozen=True)
class DatasetLayout:
    path: str  # absolute
    files: dict[str, tuple[str, ...]]  # dataset split -> its parquet files; () for a save_to_disk folder
    base: Path  # where relative image paths start
    named: bool = True  # False: one split without a name of its own (a single Dataset, unnamed parquet), our train


def clear_dataset_cache() -> None:
    """Forget the datasets this process has loaded (they are loaded again on the next ``open()``)."""
    _DATASETS.clear()
    _IMAGE_VIEWS.clear()




def split_names(splits: dict[str, str] | None) -> dict[str, tuple[str, ...]]:
    """Our split -> the dataset split names it may have, in order of preference (``splits``: the config's own)."""
    return {split: (splits[split],) if split in (splits or {}) else DEFAULT_SPLIT_NAMES[split] for split in SPLITS}


def find_layout(setting: str, splits: dict[str, str] | None, key: str) -> DatasetLayout:
    """Which kind of dataset the path ``setting`` is, and its splits; errors name the key, the path and what was
    expected."""
    path = os.path.abspath(os.path.expanduser(setting))
    if glob.has_magic(setting):
        files = sorted(file for file in glob.glob(path, recursive=True)
                       if file.endswith(".parquet") and os.path.isfile(file))
        if not files:
            raise MissingFileError(f"{key}.path: no parquet file matches {path}; expected {EXPECTED_PATH}")
        base = _glob_base(path)
    elif not os.path.exists(path):
        raise MissingFileError(f"{key}.path: {path} does not exist; expected {EXPECTED_PATH}")
    elif os.path.isdir(path):
        if is_saved_dataset(path):
            named = (Path(path) / "dataset_dict.json").is_file()  # else one Dataset, without a split name
            return DatasetLayout(path, dict.fromkeys(load_saved(path), ()), Path(path), named=named)
        files = sorted(str(file) for file in Path(path).rglob("*.parquet") if file.is_file())
        if not files:
            raise UserError(f"{key}.path: {path} is neither a dataset written by save_to_disk (no "
                            f"dataset_dict.json, or state.json and dataset_info.json) nor a folder of parquet files; "
                            f"expected {EXPECTED_PATH}")
        base = Path(path)
    elif path.endswith(".parquet"):
        files, base = [path], Path(path).parent
    else:
        raise UserError(f"{key}.path: {path} is a file but not a .parquet file; expected {EXPECTED_PATH}")
    grouped = _group_by_split(files, base, split_names(splits), key)
    if grouped is None:  # no file names a split: one split, as for a single file
        return DatasetLayout(path, {UNNAMED_SPLIT: tuple(files)}, base, named=False)
    return DatasetLayout(path, grouped, base)


def is_saved_dataset(path: str) -> bool:
    # The same test as datasets.load_from_disk, made here so that other folders are reported in our words.
    folder = Path(path)
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file())


def _glob_base(pattern: str) -> Path:
    """The folder a glob starts in: its leading parts without wildcards."""
    parts = Path(pattern).parts
    fixed = [part for part in parts[:next(i for i, part in enumerate(parts) if glob.has_magic(part))]]
    return Path(*fixed)


def _group_by_split(files: list[str], base: Path, names: dict[str, tuple[str, ...]], key: str
                    ) -> dict[str, tuple[str, ...]] | None:
    """Files by the split their name starts with (``None`` when no name starts with a split)."""
    candidates = sorted({name for options in names.values() for name in options}, key=len, reverse=True)
    grouped: dict[str, list[str]] = {}
    unmatched = []
    for file in files:
        parts = Path(file).relative_to(base).parts if Path(file).is_relative_to(base) else (Path(file).name,)
        split = next((name for part in parts for name in candidates
                      if re.match(rf"{re.escape(name)}(?![A-Za-z])", part)), None)
        if split is None:
            unmatched.append(file)
        else:
            grouped.setdefault(split, []).append(file)
    if not grouped:
        return None
    if unmatched:
        raise UserError(f"{key}.path: {unmatched[0]} names no split, while other files do "
                        f"({', '.join(sorted(grouped))}); expected file names starting with one of "
                        f"{', '.join(sorted(candidates))}, or no split names at all")
    return {split: tuple(group) for split, group in grouped.items()}


def dataset_split_for(layout: DatasetLayout, splits: dict[str, str] | None, split: str, key: str
                      ) -> tuple[str, bool | None]:
    """The dataset split that ``split`` is read from, and whether the held-out share is kept (``True``: carved
    val), dropped (``False``: train when val is carved) or not involved (``None``)."""
    names = split_names(splits)
    present = list(layout.files)

    def find(ours: str) -> str | None:
        return next((name for name in names[ours] if name in layout.files), None)

    if not layout.named:
        val, name = None, UNNAMED_SPLIT if split != "test" else None
    else:
        val = find("val")
        name = find(split) if split != "val" else val
        if name is None and split == "val":
            name = find("train")
    if name is None:
        options = " or ".join(repr(name) for name in names[split])
        extra = " (val is carved out of it when there is no validation split)" if split != "test" else ""
        # A missing test split is the data module's to judge (fatal for `test` only); a missing train always fatal.
        error = MissingSplitError if split == "test" else UserError
        raise error(f"{layout.path} has no {split} split{extra} (splits: {', '.join(present)}): add one named "
                    f"{options}, or set {key}.splits.{split} to the split that holds it")
    if val is not None or split == "test":
        return name, None
    return name, split == "val"


# Per process: the loaded datasets (memory-mapped) and the one-column views that open() reads images through.
# A data-loader worker started by fork inherits them; one started by spawn loads them on its first open().
_DATASETS: dict[tuple, Any] = {}
_IMAGE_VIEWS: dict[tuple, datasets.Dataset] = {}


def load_saved(path: str) -> dict[str, datasets.Dataset]:
    import datasets
    key = ("saved", path)
    if key not in _DATASETS:
        try:
            loaded = datasets.load_from_disk(path)
        except (OSError, ValueError) as error:  # a truncated or corrupt Arrow file: the user's data, not a bug
            raise UserError(f"{path}: datasets cannot read this saved dataset ({error})") from error
        except IndexError:  # datasets saves a split of no rows as no arrow file, then cannot load it back
            empty = ", ".join(repr(name) for name in _splits_without_rows(Path(path))) or "a split"
            raise UserError(f"{path}: datasets cannot read this saved dataset: split {empty} has no rows; leave "
                            f"it out or give it some") from None
        # A single saved Dataset is one split, called train (like a single parquet file).
        _DATASETS[key] = {UNNAMED_SPLIT: loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)
    return _DATASETS[key]


def _splits_without_rows(path: Path) -> list[str]:
    """The saved splits (folders with a ``state.json``, or ``path`` itself) that hold no arrow file."""
    folders = [path] if (path / "state.json").is_file() else sorted(state.parent for state in path.glob("*/state.json"))
    return [folder.name for folder in folders if not any(folder.glob("*.arrow"))]


def split_dataset(path: str, split: str, files: tuple[str, ...]) -> datasets.Dataset:
    import datasets
    if not files:
        return load_saved(path)[split]
    key = ("parquet", files)
    if key not in _DATASETS:
        try:
            _DATASETS[key] = datasets.load_dataset("parquet", data_files={"train": list(files)}, split="train")
        except (OSError, ValueError) as error:  # a truncated or corrupt parquet file (pyarrow's ArrowInvalid)
            raise UserError(f"{path}: datasets cannot read its parquet files ({error})") from error
    return _DATASETS[key]


def image_view(path: str, split: str, column: str, files: tuple[str, ...]) -> datasets.Dataset:
    key = (path, split, column, files)
    if key not in _IMAGE_VIEWS:
        # One column: reading a row then decodes its image and nothing else.
        _IMAGE_VIEWS[key] = split_dataset(path, split, files).select_columns([column])
    return _IMAGE_VIEWS[key]


def undecoded_rows(dataset: datasets.Dataset, columns: list[str]) -> Iterator[dict]:
    """The rows with only ``columns``, images left as stored (``{"bytes", "path"}``): none is decoded here."""
    import datasets
    view = dataset.select_columns(columns)
    features = view.features
    for column in columns:
        if isinstance(features[column], datasets.Image):
            view = view.cast_column(column, datasets.Image(decode=False))
    return iter(view)


@contextmanager
def datasets_progress():
    """``datasets`` draws its own bars (loading, converting parquet); let them show only where ours do
    (:mod:`rode_lightning.progress`): a terminal, global rank 0."""
    import datasets
    # Imported here: Lightning takes seconds to import, and a fresh data-loader worker needs it for nothing else.
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    shown = sys.stderr.isatty() and getattr(rank_zero_only, "rank", 0) == 0
    switch_off = not shown and not datasets.are_progress_bars_disabled()
    if switch_off:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if switch_off:
            datasets.enable_progress_bars()
