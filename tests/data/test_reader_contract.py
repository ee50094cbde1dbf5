"""The reader contract: what every registered dataset's reader does with bad input, tested on each one's demo copy.

Every reader names what is wrong (the file, and the line or record) and, with ``on_error="skip"``, leaves out the
record and counts it by reason, never silently (:mod:`rode_lightning.data.errors`); refuses a split, mode or
hold-out share it does not have; and, where it holds ``val`` out of train, keeps each item on its side whatever else
the list holds (:mod:`rode_lightning.data.splits`). How to damage each layout is in ``contract_cases.py``; what is
each layout's own (which malformations it detects, its messages' wording) stays in its own test file.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from rode_lightning.data.datasets import DATASETS
from rode_lightning.data.errors import DataFormatError, SkipCounter
from rode_lightning.data.records import FoodRecord
from rode_lightning.data.splits import is_held_out
from rode_lightning.user_errors import UserError
from tests.data.contract_cases import CASES, ContractCase

SPLITS = ("train", "test")


class Valid:
    """A dataset's intact demo copy, generated once per module, and what it reads as."""

    def __init__(self, case: ContractCase, root: Path):
        self.case, self.root = case, root
        self.records: dict[str, list[FoodRecord]] = {}
        self.skipped: dict[str, SkipCounter] = {}
        for split in SPLITS:
            self.skipped[split] = SkipCounter()
            self.records[split] = case.read(root, split, skipped=self.skipped[split])
        assert len(self.records["train"]) >= 3 and self.records["test"], "the contract needs a few records a split"

    def copy(self, tmp_path: Path) -> Path:
        return Path(shutil.copytree(self.root, tmp_path / self.case.name))

    def record_in(self, root: Path, split: str, index: int) -> FoodRecord:
        """A record of the intact copy, its image in the copy at ``root``."""
        record = self.records[split][index]
        if isinstance(record.image, str):
            return replace(record, image=str(root / Path(record.image).relative_to(self.root)))
        return replace(record, image=replace(record.image, path=str(root)))

    def ids(self, split: str) -> list[str]:
        return [record.id for record in self.records[split]]


@pytest.fixture(scope="module", params=list(DATASETS))
def valid(request, tmp_path_factory) -> Valid:
    name = request.param
    if name not in CASES:
        pytest.fail(f"{name} is registered but has no contract case in tests/data/contract_cases.py: every dataset "
                    f"must pass the reader contract")
    root = tmp_path_factory.mktemp(f"contract_{name}")
    DATASETS[name].write_demo(root, 0, CASES[name].sizes)
    yield Valid(CASES[name], root)
    if name == "huggingface":
        from rode_lightning.data.datasets.huggingface.files import clear_dataset_cache

        clear_dataset_cache()


def applies(valid: Valid, check: str) -> None:
    if check in valid.case.not_applicable:
        pytest.skip(f"{valid.case.name}: {valid.case.not_applicable[check]}")


def served(valid: Valid, split: str) -> str:
    return f"{valid.case.name}/{split}"


def assert_skipped_only(valid: Valid, root: Path, target: FoodRecord, reason: str) -> None:
    """Read with ``skip``: every record but ``target`` is read, and ``target`` is counted once under ``reason``."""
    skipped = SkipCounter()
    records = valid.case.read(root, "train", "skip", skipped)
    assert [record.id for record in records] == [i for i in valid.ids("train") if i != target.id]
    added = Counter(skipped)
    added.subtract(valid.skipped["train"])
    assert +added == {f"{served(valid, 'train')}: DataFormatError: {reason}": 1}


def test_every_registered_dataset_has_contract_cases():
    assert sorted(set(DATASETS) - set(CASES)) == [], "add a case to tests/data/contract_cases.py"


def test_a_missing_root_is_named(valid, tmp_path):
    for on_error in ("raise", "skip"):
        with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
            valid.case.read(tmp_path / "nowhere", "train", on_error)


def test_a_missing_file_is_named_in_both_modes(valid, tmp_path):
    applies(valid, "missing_file")
    root = valid.copy(tmp_path)
    for files, split, message in valid.case.required_files:
        for name in files:
            (root / name).rename(tmp_path / f"away-{Path(name).name}")
        for on_error in ("raise", "skip"):
            with pytest.raises(FileNotFoundError, match=message):
                valid.case.read(root, split, on_error)
        for name in files:
            (tmp_path / f"away-{Path(name).name}").rename(root / name)


def test_a_malformed_record_is_named_or_skipped_and_counted(valid, tmp_path):
    root = valid.copy(tmp_path)
    target = valid.record_in(root, "train", 1)
    location, reason = valid.case.break_record(root, target)
    with pytest.raises(DataFormatError, match=rf"^{location}: {reason}"):
        valid.case.read(root, "train")
    assert_skipped_only(valid, root, target, reason.split(":")[0])


@pytest.mark.parametrize("damage", ["garbage", "cut in half"])
def test_an_unreadable_or_truncated_image_is_named_or_skipped_and_counted(valid, tmp_path, damage):
    root = valid.copy(tmp_path)
    target = valid.record_in(root, "train", 1)
    image = valid.case.image_bytes(root, target)
    valid.case.set_images(root, [target], b"not an image" if damage == "garbage" else image[:len(image) // 2])
    location = valid.case.image_location(root, target)
    with pytest.raises(DataFormatError, match=rf"^{location}: unreadable image: "):
        valid.case.read(root, "train")
    assert_skipped_only(valid, root, target, "unreadable image")


def test_a_split_without_usable_items_is_an_error_naming_its_file(valid, tmp_path):
    root = valid.copy(tmp_path)
    test = [valid.record_in(root, "test", index) for index in range(len(valid.records["test"]))]
    valid.case.set_images(root, test, b"not an image")  # every item bad: all skipped, then nothing is left
    with pytest.raises(DataFormatError, match=rf"^{valid.case.split_file(root, 'test')}: no usable .* split 'test'"
                                              rf".* \(skipped: .*{len(test)} x {served(valid, 'test')}: "
                                              r"DataFormatError: unreadable image"):
        valid.case.read(root, "test", "skip")
    error, message = valid.case.empty_split(root, "test") or (
        DataFormatError, rf"^{valid.case.split_file(root, 'test')}: no .* 'test'")
    for on_error in ("raise", "skip"):
        with pytest.raises(error, match=message):
            valid.case.read(root, "test", on_error)


def test_text_that_is_not_utf8_is_named_in_both_modes(valid, tmp_path):
    applies(valid, "not_utf8")
    root = valid.copy(tmp_path)
    for name, split in valid.case.text_files.items():
        path = root / name
        text = path.read_bytes()
        path.write_bytes(text[:3] + b"\xff" + text[3:])
        for on_error in ("raise", "skip"):
            with pytest.raises(DataFormatError, match=rf"^{re.escape(str(path))}: not UTF-8 text \(byte 3\)"):
                valid.case.read(root, split, on_error)
        path.write_bytes(text)


def test_an_unknown_split_mode_or_hold_out_share_is_refused(valid):
    with pytest.raises(ValueError, match=r"split 'validation': expected one of \['train', 'val', 'test'\]$"):
        valid.case.read(valid.root, "validation")
    with pytest.raises(UserError, match=r"^on_error='ignore': expected one of \['raise', 'skip'\]"):
        valid.case.read(valid.root, "train", "ignore")
    if "hold_out" not in valid.case.not_applicable:
        for fraction in (0.0, 1.0, -0.1):
            with pytest.raises(UserError, match=rf"^val_fraction={fraction}: expected a number in \(0, 1\)$"):
                valid.case.read(valid.root, "val", val_fraction=fraction)


def test_an_item_keeps_its_side_of_the_hold_out_when_others_come_and_go(valid, tmp_path):
    """``val`` is the share of train whose keys hash below the fraction: disjoint from train, the same on every
    read, growing only by moving items over as the fraction grows, and an item's side does not depend on the
    others (dropping items leaves the rest where they were; adding them back is the reverse)."""
    applies(valid, "hold_out")
    case, root = valid.case, valid.copy(tmp_path)
    case.without_validation(root)
    options = case.hold_out_options(root)

    def keys(split: str, fraction: float = 0.5) -> set[str]:
        return {case.hold_out_key(root, record) for record in case.read(root, split, val_fraction=fraction,
                                                                         options=options)}

    train, val = keys("train"), keys("val")
    assert len(train) >= 2 and len(val) >= 2 and not train & val
    assert all(is_held_out(key, 0.5) for key in val) and not any(is_held_out(key, 0.5) for key in train)
    assert keys("val") == val and val < keys("val", 0.9)
    dropped = {min(train), min(val)}
    case.drop(root, dropped)
    assert (keys("train"), keys("val")) == (train - dropped, val - dropped)
    with pytest.raises(DataFormatError, match=rf"^{case.split_file(root, 'val')}: no .* 'val'"):
        case.read(root, "val", val_fraction=1e-9, options=options)  # a share too small to hold out any item
