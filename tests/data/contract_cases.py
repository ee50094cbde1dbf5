"""How to break each registered dataset's small valid copy, for the reader contract (``test_reader_contract.py``).

The contract is the same for every dataset; what differs is where its layout keeps a record, an image, a split, so
each dataset has one small case class here saying how to damage its copy and where the reader must then point
(a regular expression for the ``file:line`` or ``file: record N`` of its messages). A check that cannot apply to a
layout is listed in ``not_applicable`` with the reason; the contract test skips it saying so. A registered dataset
without a case fails the contract: a new dataset cannot leave it out.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, ClassVar

from rode_lightning.data.datasets import DATASETS, ReadRequest
from rode_lightning.data.errors import SkipCounter
from rode_lightning.data.records import FoodRecord
from rode_lightning.data.splits import DEFAULT_VAL_FRACTION, belongs_to
from rode_lightning.user_errors import UserError


def _line_of(path: Path, wanted: Callable[[str], bool]) -> int:
    """The 1-based number of the first line of ``path`` that ``wanted`` accepts."""
    return next(number for number, line in enumerate(path.read_text().splitlines(), start=1) if wanted(line))


def _replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("".join(f"{line}\n" for line in lines))


def _keep_lines(path: Path, keep: Callable[[str], bool]) -> None:
    path.write_text("".join(f"{line}\n" for line in path.read_text().splitlines() if keep(line)))


def _at(path: Path, line: int) -> str:
    return re.escape(f"{path}:{line}")


class ContractCase:
    """One dataset's copy for the contract, and how to break it. ``sizes`` are its demo sizes (small: every test
    copies it); the methods get the copy's root and a record read from the intact copy."""

    name: ClassVar[str]
    sizes: ClassVar[dict[str, int]]
    not_applicable: ClassVar[dict[str, str]] = {}
    required_files: ClassVar[list[tuple[tuple[str, ...], str, str]]] = []
    """(files removed together, the split read, what the FileNotFoundError says) for each file the layout needs."""
    text_files: ClassVar[dict[str, str]] = {}
    """Each text file -> a split whose read decodes it."""

    def options(self, root: Path) -> Any:
        return DATASETS[self.name].demo_options(root)

    def read(self, root: Path, split: str, on_error: str = "raise", skipped: SkipCounter | None = None,
             val_fraction: float = DEFAULT_VAL_FRACTION, options: Any = None) -> list[FoodRecord]:
        request = ReadRequest(split, on_error, SkipCounter() if skipped is None else skipped, val_fraction,
                              demo=True)
        return DATASETS[self.name].read(root, self.options(root) if options is None else options, request)

    def split_file(self, root: Path, split: str) -> str:
        """Where a split's items are listed: what a split without usable items is reported by."""
        raise NotImplementedError

    def break_record(self, root: Path, record: FoodRecord) -> tuple[str, str]:
        """Make ``record`` unusable for a reason of its layout; returns (where it is reported, the reason)."""
        raise NotImplementedError

    def image_location(self, root: Path, record: FoodRecord) -> str:
        """Where a problem with ``record``'s image is reported."""
        raise NotImplementedError

    def image_bytes(self, root: Path, record: FoodRecord) -> bytes:
        return Path(record.image).read_bytes()

    def set_images(self, root: Path, records: list[FoodRecord], data: bytes | list[bytes]) -> None:
        """Store ``data`` (one value for all, or one per record) as the records' image files."""
        for record, value in zip(records, data if isinstance(data, list) else [data] * len(records)):
            Path(record.image).write_bytes(value)

    def empty_split(self, root: Path, split: str) -> tuple[type[Exception], str] | None:
        """Leave ``split`` with no item; returns the error and message expected where they are not the
        :class:`DataFormatError` naming :meth:`split_file`."""
        raise NotImplementedError

    # Held-out validation, for the layouts without a validation split of their own.

    def without_validation(self, root: Path) -> None:
        """Leave the copy no validation split of its own, so that ``val`` is held out of train."""

    def hold_out_options(self, root: Path) -> Any:
        return self.options(root)

    def hold_out_key(self, root: Path, record: FoodRecord) -> str:
        """What the reader hashes to place ``record`` (:func:`~rode_lightning.data.splits.is_held_out`)."""
        return record.id

    def drop(self, root: Path, keys: set[str]) -> None:
        """Remove the train items of these hold-out keys."""
        raise NotImplementedError


class UniFoodCase(ContractCase):
    name = "unifood"
    sizes = {"train": 12, "val": 2, "test": 2}
    required_files = [(("annotations/train.jsonl",), "train", r"expected the annotation file .*annotations/"
                                                               r"train\.jsonl, which does not exist"),
                      (("annotations/test.jsonl",), "test", r"annotations/test\.jsonl, which does not exist")]
    text_files = {"annotations/train.jsonl": "train", "annotations/test.jsonl": "test"}

    def split_file(self, root, split):
        held_out = split == "val" and not (root / "annotations" / "val.jsonl").is_file()
        return re.escape(str(root / "annotations" / f"{'train' if held_out else split}.jsonl"))

    def _line(self, root, record):
        return _line_of(root / "annotations" / "train.jsonl", lambda line: json.loads(line)["id"] == record.id)

    def break_record(self, root, record):
        path, line = root / "annotations" / "train.jsonl", self._line(root, record)
        _replace_line(path, line, "{not json")
        return _at(path, line), "malformed JSON"

    def image_location(self, root, record):
        return _at(root / "annotations" / "train.jsonl", self._line(root, record))

    def empty_split(self, root, split):
        (root / "annotations" / f"{split}.jsonl").write_text("")

    def without_validation(self, root):
        (root / "annotations" / "val.jsonl").unlink()

    def drop(self, root, keys):
        _keep_lines(root / "annotations" / "train.jsonl", lambda line: json.loads(line)["id"] not in keys)


class Nutrition5kCase(ContractCase):
    name = "nutrition5k"
    sizes = {"train": 12, "test": 2}
    CAFES = ("metadata/dish_metadata_cafe1.csv", "metadata/dish_metadata_cafe2.csv")
    SPLIT_FILES = {"train": "dish_ids/splits/rgb_train_ids.txt", "test": "dish_ids/splits/rgb_test_ids.txt"}
    required_files = [
        ((CAFES[0],), "train", rf"metadata file .*{CAFES[0]} does not exist \(the release has {CAFES[0]} and "),
        ((CAFES[1],), "test", rf"metadata file .*{CAFES[1]} does not exist"),
        ((SPLIT_FILES["train"],), "val", rf"split file .*{SPLIT_FILES['train']} does not exist \(expected one "),
        ((SPLIT_FILES["test"],), "test", rf"split file .*{SPLIT_FILES['test']} does not exist"),
    ]
    text_files = {CAFES[0]: "train", CAFES[1]: "train", SPLIT_FILES["train"]: "train", SPLIT_FILES["test"]: "test"}

    def split_file(self, root, split):
        return re.escape(str(root / self.SPLIT_FILES["test" if split == "test" else "train"]))

    def break_record(self, root, record):
        for cafe in self.CAFES:
            path = root / cafe
            lines = path.read_text().splitlines()
            for number, line in enumerate(lines, start=1):
                if line.startswith(f"{record.id},"):
                    fields = line.split(",")
                    fields[3] = "lots"  # total_fat
                    _replace_line(path, number, ",".join(fields))
                    return _at(path, number), r"bad nutrition value: field 4 \(total_fat\) is 'lots'"
        raise AssertionError(f"{record.id} has no metadata row")

    def image_location(self, root, record):
        path = root / self.SPLIT_FILES["train"]
        return _at(path, _line_of(path, lambda line: line.strip() == record.id))

    def empty_split(self, root, split):
        (root / self.SPLIT_FILES[split]).write_text("")

    def drop(self, root, keys):
        _keep_lines(root / self.SPLIT_FILES["train"], lambda line: line.strip() not in keys)


class Recipe1MCase(ContractCase):
    name = "recipe1m"
    sizes = {"train": 12, "val": 3, "test": 3}
    not_applicable = {"hold_out": "Recipe1M releases its own val partition"}
    required_files = [((name,), "train", rf"Recipe1M file .*{name} does not exist \(the release has layer1\.json, "
                                         r"layer2\.json and det_ingrs\.json")
                      for name in ("layer1.json", "layer2.json", "det_ingrs.json")]
    text_files = dict.fromkeys(("layer1.json", "layer2.json", "det_ingrs.json",
                                "recipes_with_nutritional_info.json"), "train")

    def split_file(self, root, split):
        return re.escape(str(root / "layer1.json"))

    def _entry(self, root, record) -> tuple[Path, list, int]:
        path = root / "layer2.json"
        entries = json.loads(path.read_text())
        return path, entries, next(index for index, entry in enumerate(entries) if entry["id"] == record.id)

    def break_record(self, root, record):
        path, entries, index = self._entry(root, record)
        entries[index]["images"] = "not a list"  # layer2, so the train vocabulary stays the same
        path.write_text(json.dumps(entries))
        return re.escape(f"{path}: record {index}, id {record.id!r}"), "wrong type"

    def image_location(self, root, record):
        path, _, index = self._entry(root, record)
        return re.escape(f"{path}: record {index}, id {record.id!r}")

    def empty_split(self, root, split):
        path = root / "layer1.json"
        path.write_text(json.dumps([entry for entry in json.loads(path.read_text()) if entry["partition"] != split]))


class Food101Case(ContractCase):
    name = "food101"
    sizes = {"train": 12, "test": 2}
    required_files = [
        (("meta/classes.txt",), "test", r"class list .*meta/classes\.txt does not exist \(the release has "
                                        r"meta/classes\.txt, one class name per line\)"),
        (("meta/train.txt", "meta/train.json"), "train", r"split list .*meta/train\.txt does not exist, nor "
                                                         r".*meta/train\.json \(the release has both"),
        (("meta/test.txt", "meta/test.json"), "test", r"split list .*meta/test\.txt does not exist"),
    ]
    text_files = {"meta/classes.txt": "train", "meta/labels.txt": "test", "meta/train.txt": "train",
                  "meta/test.txt": "test"}

    def split_file(self, root, split):
        return re.escape(str(root / "meta" / f"{'test' if split == 'test' else 'train'}.txt"))

    def _line(self, root, record):
        return _line_of(root / "meta" / "train.txt", lambda line: line.strip() == record.id)

    def break_record(self, root, record):
        path, line = root / "meta" / "train.txt", self._line(root, record)
        # The reader places an entry by its text before checking it: a malformed text still on train's side.
        malformed = next(text for text in (f"{record.id}.jpg", f"{record.id}.JPG", f"images/{record.id}",
                                           record.id.split("/")[1], f"{record.id}/0")
                         if belongs_to(text, "train", DEFAULT_VAL_FRACTION))
        _replace_line(path, line, malformed)
        return _at(path, line), "malformed entry"

    def image_location(self, root, record):
        return _at(root / "meta" / "train.txt", self._line(root, record))

    def empty_split(self, root, split):
        (root / "meta" / f"{split}.txt").write_text("")

    def drop(self, root, keys):
        _keep_lines(root / "meta" / "train.txt", lambda line: line.strip() not in keys)


class Vireo172Case(ContractCase):
    name = "vireo172"
    sizes = {"train": 8, "val": 2, "test": 2}
    LISTS = "SplitAndIngreLabel"
    not_applicable = {"hold_out": "VIREO Food-172 releases its own VAL.txt"}
    required_files = [
        ((f"{LISTS}/FoodList.txt",), "train", rf"file .*{LISTS}/FoodList\.txt does not exist \(the release has "
                                              rf"{LISTS}/FoodList\.txt and {LISTS}/IngredientList\.txt"),
        ((f"{LISTS}/IngredientList.txt",), "train", rf"file .*{LISTS}/IngredientList\.txt does not exist"),
        ((f"{LISTS}/IngreLabel.txt",), "test", rf"label file .*{LISTS}/IngreLabel\.txt does not exist \(the "
                                               rf"release has {LISTS}/IngreLabel\.txt"),
        ((f"{LISTS}/VAL.txt",), "val", rf"split file .*{LISTS}/VAL\.txt does not exist \(the release has "
                                       rf".*TR\.txt, .*VAL\.txt, .*TE\.txt"),
    ]
    text_files = {f"{LISTS}/FoodList.txt": "train", f"{LISTS}/IngredientList.txt": "train",
                  f"{LISTS}/IngreLabel.txt": "train", f"{LISTS}/TR.txt": "train", f"{LISTS}/TE.txt": "test"}

    def split_file(self, root, split):
        return re.escape(str(root / self.LISTS / {"train": "TR.txt", "val": "VAL.txt", "test": "TE.txt"}[split]))

    def break_record(self, root, record):
        path = root / self.LISTS / "IngreLabel.txt"
        line = _line_of(path, lambda text: text.split()[0] == f"/{record.id}")
        _replace_line(path, line, f"/{record.id} -1 1")
        return _at(path, line), "wrong number of values"

    def image_location(self, root, record):
        path = root / self.LISTS / "TR.txt"
        return _at(path, _line_of(path, lambda line: line.strip() == f"/{record.id}"))

    def empty_split(self, root, split):
        (root / self.LISTS / "TE.txt").write_text("")


class HuggingFaceCase(ContractCase):
    """The demo's ``save_to_disk`` folder: a record is a row of an arrow file, so breaking one writes its split again
    with that row changed (and clears the reader's per-process cache of loaded datasets)."""

    name = "huggingface"
    sizes = {"train": 12, "validation": 2, "test": 2}
    not_applicable = {
        "missing_file": "a Hugging Face dataset is the one path its source names (the missing root); the files "
                        "inside it are the datasets library's",
        "not_utf8": "a Hugging Face dataset has no text lines: its rows are arrow data",
    }

    def split_file(self, root, split):
        if split == "val":
            split = "validation" if (root / "validation").is_dir() else "train"  # else held out of train
        return re.escape(f"{root} split {split!r}")

    @staticmethod
    def _rewrite(root: Path, split: str, change: Callable[[dict[str, list]], dict[str, list] | None],
                 features: dict | None = None) -> None:
        """Write ``split`` again with its columns as ``change`` leaves (or returns) them; ``features``: extra."""
        from datasets import Dataset, Features, load_from_disk

        from rode_lightning.data.datasets.huggingface.files import clear_dataset_cache

        saved = load_from_disk(str(root / split))
        columns, all_features = saved.data.to_pydict(), Features({**saved.features, **(features or {})})
        del saved
        columns = change(columns) or columns
        clear_dataset_cache()
        shutil.rmtree(root / split)
        Dataset.from_dict(columns, features=all_features).save_to_disk(str(root / split))

    @staticmethod
    def _remove_splits(root: Path, *splits: str) -> None:
        index = json.loads((root / "dataset_dict.json").read_text())
        index["splits"] = [split for split in index["splits"] if split not in splits]
        (root / "dataset_dict.json").write_text(json.dumps(index))
        for split in splits:
            shutil.rmtree(root / split)

    @staticmethod
    def _row(record: FoodRecord) -> int:
        return record.image.row

    def break_record(self, root, record):
        self._rewrite(root, "train", lambda columns: columns["fat"].__setitem__(self._row(record), -3.0))
        return self.image_location(root, record), r"bad nutrition value: column 'fat' \(nutrition fat_g\) is -3"

    def image_location(self, root, record):
        return re.escape(f"{root} split {record.image.split!r} row {self._row(record)}")

    def image_bytes(self, root, record):
        from datasets import load_from_disk

        rows = load_from_disk(str(root / record.image.split)).data.column("image")
        return rows[self._row(record)]["bytes"].as_py()

    def set_images(self, root, records, data):
        values = data if isinstance(data, list) else [data] * len(records)
        for split in {record.image.split for record in records}:
            def change(columns, split=split):
                for record, value in zip(records, values):
                    if record.image.split == split:
                        columns["image"][self._row(record)] = {"bytes": value, "path": None}
            self._rewrite(root, split, change)

    def empty_split(self, root, split):
        self._rewrite(root, split, lambda columns: {key: [] for key in columns})
        # The datasets library writes a split of no rows but cannot read it back: refused as such, naming it.
        return UserError, (rf"^{re.escape(str(root))}: datasets cannot read this saved dataset: split '{split}' has "
                           r"no rows")

    def without_validation(self, root):
        """Train alone, with an id column (``name``): row numbers, the ids without one, would shift when rows are
        dropped, which is a row's identity changing, not its side."""
        from datasets import Value

        self._remove_splits(root, "validation", "test")
        self._rewrite(root, "train", lambda columns: columns.__setitem__(
            "name", [f"dish-{row}" for row in range(len(columns["image"]))]), {"name": Value("string")})

    def hold_out_options(self, root):
        return replace(self.options(root), id="name")

    def drop(self, root, keys):
        def change(columns):
            kept = [row for row, name in enumerate(columns["name"]) if name not in keys]
            return {key: [values[row] for row in kept] for key, values in columns.items()}
        self._rewrite(root, "train", change)


class ConversationsCase(ContractCase):
    name = "conversations"
    sizes = {"train": 12, "test": 2}
    required_files = [(("train.json",), "train", r"has no train\.json or train\.jsonl"),
                      (("test.json",), "test", r"conversation JSON split 'test': .* has no test\.json or "
                                               r"test\.jsonl")]
    text_files = {"train.json": "train", "test.json": "test"}

    def split_file(self, root, split):
        return re.escape(str(root / f"{'test' if split == 'test' else 'train'}.json"))

    def _items(self, root, record) -> tuple[Path, list, int]:
        path = root / "train.json"
        items = json.loads(path.read_text())
        return path, items, next(index for index, item in enumerate(items) if item["id"] == record.id)

    def break_record(self, root, record):
        path, items, index = self._items(root, record)
        items[index]["conversations"] = []
        path.write_text(json.dumps(items))
        return re.escape(f"{path}[{index}]"), "no conversation"

    def image_location(self, root, record):
        path, _, index = self._items(root, record)
        return re.escape(f"{path}[{index}]")

    def empty_split(self, root, split):
        (root / f"{split}.json").write_text("[]")

    def hold_out_key(self, root, record):
        return str(Path(record.image).relative_to(root))

    def drop(self, root, keys):
        path = root / "train.json"
        path.write_text(json.dumps([item for item in json.loads(path.read_text()) if item["image"] not in keys]))


CASES: dict[str, ContractCase] = {case.name: case for case in (
    UniFoodCase(), Nutrition5kCase(), Recipe1MCase(), Food101Case(), Vireo172Case(), HuggingFaceCase(),
    ConversationsCase())}
"""Every dataset's contract case by registered name."""
