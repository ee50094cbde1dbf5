"""Food-101's own layout: class and label files, text and JSON lists, their entries, the demo copy. What every
reader does with bad input (skipping and counting, unreadable images, missing files, non-UTF-8 text, empty splits,
held-out val) is the reader contract's, ``test_reader_contract.py``."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from rode_lightning.data.dishes import CATEGORIES, INGREDIENTS, directory_digest
from rode_lightning.data.datasets.food101.demo import generate_demo_food101
from rode_lightning.data.errors import DataFormatError, SkipCounter
from rode_lightning.data.datasets.food101.reader import read_food101_split

CLASSES, LABELS = "meta/classes.txt", "meta/labels.txt"
TRAIN, TEST = "meta/train.txt", "meta/test.txt"
TRAIN_JSON, TEST_JSON = "meta/train.json", "meta/test.json"
A, B, C = "apple_pie/1005649", "fried_rice/2001", "apple_pie/3002"


def jpeg_bytes(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def by_class(entries) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {}
    for entry in entries:
        lists.setdefault(entry.split("/")[0], []).append(entry)
    return lists


def write_release(root, classes=("apple_pie", "fried_rice"), labels=("Apple Pie", "Egg Fried Rice"), train=(A, B),
                  test=(C,), lists=("txt", "json"), images=None):
    """A Food-101 root in the release layout: ``labels=None`` leaves out labels.txt, ``lists`` says which list
    formats are written; every listed entry gets a valid JPEG unless ``images`` says otherwise (``None`` for no
    file, bytes for a file with those bytes)."""
    files = {CLASSES: "".join(f"{name}\n" for name in classes)}
    if labels is not None:
        files[LABELS] = "".join(f"{label}\n" for label in labels)
    for text_path, json_path, entries in ((TRAIN, TRAIN_JSON, train), (TEST, TEST_JSON, test)):
        if "txt" in lists:
            files[text_path] = "".join(f"{entry}\n" for entry in entries)
        if "json" in lists:
            files[json_path] = json.dumps(by_class(entries))
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    images = {entry: jpeg_bytes() for entry in (*train, *test) if "/" in entry} | (images or {})
    for entry, data in images.items():
        if data is not None:
            path = root / "images" / f"{entry}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return root


ALL_TRAIN = 1e-9  # a hold-out share too small to take any entry of these tests: the train list is all train


def read_train(root, **kwargs):
    return read_food101_split(root, "train", val_fraction=ALL_TRAIN, **kwargs)


def test_release_is_read_with_display_names_lower_cased(tmp_path):
    records = read_train(write_release(tmp_path, train=(B, A)))
    assert [record.id for record in records] == [B, A]  # list order
    b, a = records
    assert a.dataset == "food101" and a.image == str(tmp_path / "images" / "apple_pie" / "1005649.jpg")
    assert (a.category, b.category) == ("apple pie", "egg fried rice")  # from labels.txt, not the class names
    assert a.ingredients == () and a.recipe == () and a.nutrition is None


def test_without_labels_txt_the_class_name_is_the_category(tmp_path):
    records = read_train(write_release(tmp_path, labels=None))
    assert [record.category for record in records] == ["apple pie", "fried rice"]


def test_test_split_reads_its_own_list(tmp_path):
    assert [record.id for record in read_food101_split(write_release(tmp_path), "test")] == [C]


def test_json_list_is_read_when_the_txt_list_is_absent(tmp_path):
    records = read_train(write_release(tmp_path, train=(A, C, B), lists=("json",)))
    assert [record.id for record in records] == [A, C, B]  # by class as the JSON files them
    assert [record.category for record in records] == ["apple pie", "apple pie", "egg fried rice"]


def test_txt_list_is_preferred_to_the_json_list(tmp_path):
    write_release(tmp_path, train=(A, B))
    (tmp_path / TRAIN_JSON).write_text(json.dumps({"apple_pie": [A]}))
    assert [record.id for record in read_train(tmp_path)] == [A, B]


BAD_ENTRY = [
    # (case, release overrides, file:line the error names, message (it starts with the skip reason))
    ("no class", {"train": (A, "1005649")}, f"{TRAIN}:2",
     r"malformed entry: '1005649', expected <class>/<image id> without extension"),
    ("with extension", {"train": (A, "fried_rice/2001.jpg")}, f"{TRAIN}:2",
     r"malformed entry: 'fried_rice/2001.jpg', expected <class>/<image id> without extension"),
    ("too many parts", {"train": (A, "images/fried_rice/2001")}, f"{TRAIN}:2",
     r"malformed entry: 'images/fried_rice/2001'"),
    ("unknown class", {"train": (A, "pizza/7")}, f"{TRAIN}:2",
     rf"unknown class: 'pizza' is not a line of {CLASSES}"),
    ("missing image", {"images": {B: None}}, f"{TRAIN}:2",
     r"missing image: .*images/fried_rice/2001.jpg does not exist"),
]


@pytest.mark.parametrize("overrides, location, message", [case[1:] for case in BAD_ENTRY],
                         ids=[case[0] for case in BAD_ENTRY])
def test_bad_entry_raises_naming_file_and_line(tmp_path, overrides, location, message):
    write_release(tmp_path, **overrides)
    with pytest.raises(DataFormatError, match=rf"{location}: {message}"):
        read_train(tmp_path)


def test_entry_listed_twice(tmp_path):
    write_release(tmp_path, train=(A, B, A))
    with pytest.raises(DataFormatError, match=rf"{TRAIN}:3: duplicate entry: {A} is listed again \(first at "
                                              rf".*{TRAIN}:1\)"):
        read_train(tmp_path)
    skipped = SkipCounter()
    assert [record.id for record in read_train(tmp_path, on_error="skip", skipped=skipped)] == [A, B]
    assert skipped == {"food101/train: DataFormatError: duplicate entry": 1}


@pytest.mark.parametrize("lists, location, message, reason", [
    ({"apple_pie": [A, B]}, rf'{TRAIN_JSON}\["apple_pie"\]\[1\]',
     rf"misfiled entry: {B} is listed under 'apple_pie', expected under its own class 'fried_rice'",
     "misfiled entry"),
    ({"apple_pie": [A], "pizza": ["pizza/7"]}, rf'{TRAIN_JSON}\["pizza"\]\[0\]', "unknown class: 'pizza'",
     "unknown class"),
], ids=["misfiled", "unknown class"])
def test_bad_json_entry_is_named_by_class_and_index_in_both_modes(tmp_path, lists, location, message, reason):
    write_release(tmp_path, lists=("json",))
    (tmp_path / TRAIN_JSON).write_text(json.dumps(lists))
    with pytest.raises(DataFormatError, match=rf"{location}: {message}"):
        read_train(tmp_path)
    skipped = SkipCounter()
    assert [record.id for record in read_train(tmp_path, on_error="skip", skipped=skipped)] == [A]
    assert skipped == {f"food101/train: DataFormatError: {reason}": 1}


@pytest.mark.parametrize("text, message", [
    ('{"apple_pie": ["apple_pie/1005649",\n  ]}', rf"{TRAIN_JSON}:2: malformed JSON: .* at column 3"),
    ('["apple_pie/1005649"]', rf"{TRAIN_JSON}: malformed list: expected a JSON object .* found a list"),
    ('{"apple_pie": "apple_pie/1005649"}', rf"{TRAIN_JSON}: malformed list: the value of 'apple_pie' is not a list"),
    ('{"apple_pie": [1005649]}', rf"{TRAIN_JSON}: malformed list: the value of 'apple_pie' is not a list"),
], ids=["syntax", "not an object", "not a list", "not strings"])
def test_malformed_json_list_stops_the_read_in_both_modes(tmp_path, text, message):
    write_release(tmp_path, lists=("json",))
    (tmp_path / TRAIN_JSON).write_text(text)
    for on_error in ("raise", "skip"):
        with pytest.raises(DataFormatError, match=message):
            read_train(tmp_path, on_error=on_error)


@pytest.mark.parametrize("overrides, message", [
    ({"labels": ("Apple pie",)},
     rf"{LABELS}: wrong number of display names: found 1, expected one per class of {CLASSES} \(2\)"),
    ({"labels": ("Apple pie", "", "Fried rice")}, rf"{LABELS}:2: empty display name: expected one display name"),
    ({"classes": ("apple_pie", "", "fried_rice"), "labels": None}, rf"{CLASSES}:2: empty class name"),
    ({"classes": ("apple_pie", "fried_rice", "apple_pie"), "labels": None},
     rf"{CLASSES}:3: duplicate class: apple_pie is also on line 1"),
    ({"classes": ("apple pie", "fried_rice"), "labels": None}, rf"{CLASSES}:1: bad class name: 'apple pie'"),
    ({"classes": ()}, rf"{CLASSES}: no class names"),
], ids=["labels count", "labels gap", "classes gap", "duplicate class", "bad class name", "no classes"])
def test_bad_class_files_stop_the_read_in_both_modes(tmp_path, overrides, message):
    write_release(tmp_path, **overrides)
    for on_error in ("raise", "skip"):
        with pytest.raises(DataFormatError, match=message):
            read_train(tmp_path, on_error=on_error)


def test_trailing_blank_lines_in_the_class_files_are_allowed(tmp_path):
    write_release(tmp_path, classes=("apple_pie", "fried_rice", "", ""), labels=("Apple Pie", "Fried rice", ""))
    assert [record.category for record in read_train(tmp_path)] == ["apple pie", "fried rice"]


def test_root_above_the_unpacked_release_gets_a_hint(tmp_path):
    write_release(tmp_path / "food-101")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'food-101' / CLASSES} exists: pass "
                                                rf"{tmp_path / 'food-101'} as the root"):
        read_train(tmp_path)


@pytest.fixture(scope="module")
def demo_food101(tmp_path_factory):
    return generate_demo_food101(tmp_path_factory.mktemp("demo_food101"), seed=0)


def test_demo_counts_and_categories(demo_food101):
    splits = {split: read_food101_split(demo_food101, split) for split in ("train", "val", "test")}
    assert len(splits["train"]) + len(splits["val"]) == 96 and len(splits["test"]) == 24
    assert (demo_food101 / CLASSES).read_text().splitlines() == sorted(name.replace(" ", "_") for name in CATEGORIES)
    for record in (record for records in splits.values() for record in records):
        class_name, image_id = record.id.split("/")
        assert record.category == class_name.replace("_", " ") and record.category in CATEGORIES
        assert record.image == str(demo_food101 / "images" / class_name / f"{image_id}.jpg")
    ids = [record.id for records in splits.values() for record in records]
    assert len(set(ids)) == len(ids) == 120


def test_demo_images_show_their_category(demo_food101):
    """Every plate shows the core ingredients of the category its class names (JPEG keeps flat colours within a
    few levels inside each shape)."""
    for record in read_food101_split(demo_food101, "test"):
        pixels = np.asarray(Image.open(record.image).convert("RGB")).reshape(-1, 3).astype(int)
        assert Image.open(record.image).format == "JPEG"
        for name in CATEGORIES[record.category].core:
            assert np.abs(pixels - INGREDIENTS[name].colour).max(axis=1).min() <= 4, (record.id, name)


def test_demo_json_lists_hold_the_same_entries(demo_food101, tmp_path):
    copy = shutil.copytree(demo_food101, tmp_path / "copy")
    (copy / TRAIN).unlink()
    from_json = [record.id for record in read_food101_split(copy, "train")]
    assert from_json == [record.id for record in read_food101_split(demo_food101, "train")]


def test_demo_is_deterministic_and_idempotent(tmp_path):
    sizes = {"train": 5, "test": 2}
    first = generate_demo_food101(tmp_path / "a", seed=3, sizes=sizes, image_size=16)
    second = generate_demo_food101(tmp_path / "b", seed=3, sizes=sizes, image_size=16)
    other = generate_demo_food101(tmp_path / "c", seed=4, sizes=sizes, image_size=16)
    assert directory_digest(first) == directory_digest(second) != directory_digest(other)
    before = (first / TRAIN).stat().st_mtime_ns
    generate_demo_food101(first, seed=3, sizes=sizes, image_size=16)
    assert (first / TRAIN).stat().st_mtime_ns == before
    # Other arguments replace the previous demo instead of mixing with it.
    generate_demo_food101(first, seed=3, sizes={"train": 1, "test": 1}, image_size=16)
    assert len(list((first / "images").rglob("*.jpg"))) == 2


def test_demo_refuses_to_overwrite_a_directory_it_did_not_write(tmp_path):
    write_release(tmp_path)
    with pytest.raises(FileExistsError, match="not a demo this function wrote"):
        generate_demo_food101(tmp_path, sizes={"train": 1, "test": 1})
    assert (tmp_path / TRAIN).read_text() == f"{A}\n{B}\n"


def test_demo_refuses_unknown_splits(tmp_path):
    with pytest.raises(ValueError, match=r"sizes=\{'val': 3\}: expected non-negative counts for splits among"):
        generate_demo_food101(tmp_path, sizes={"val": 3})
