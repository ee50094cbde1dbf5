"""VIREO Food-172's own layout: name lists, label lines and their checks, images without ingredients, the demo
copy. What every reader does with bad input (skipping and counting, unreadable images, missing files, non-UTF-8
text, empty splits) is the reader contract's, ``test_reader_contract.py``."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from rode_lightning.data.dishes import CATEGORIES, INGREDIENTS, directory_digest
from rode_lightning.data.datasets.vireo172.demo import generate_demo_vireo172
from rode_lightning.data.errors import DataFormatError, SkipCounter
from rode_lightning.data.records import Ingredient
from rode_lightning.data.datasets.vireo172.reader import read_vireo172_split

TR, VAL, TE = "SplitAndIngreLabel/TR.txt", "SplitAndIngreLabel/VAL.txt", "SplitAndIngreLabel/TE.txt"
FOOD_LIST = "SplitAndIngreLabel/FoodList.txt"
INGREDIENT_LIST = "SplitAndIngreLabel/IngredientList.txt"
LABELS = "SplitAndIngreLabel/IngreLabel.txt"
A, B, C = "/1/1_0.jpg", "/2/5_0.jpg", "/2/6_1.jpg"
LABEL_LINES = (f"{A} 1 -1 -1", f"{B} -1 1 1", f"{C} -1 1 -1")


def jpeg_bytes(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_release(root, classes=("Braised pork", "Fried rice"), ingredients=("pork", "rice", "egg"),
                  labels=LABEL_LINES, train=(A, B), val=(C,), test=(C,), images=None):
    """A VIREO Food-172 root in the release layout; every listed image gets a valid JPEG unless ``images`` says
    otherwise (``None`` for no file, bytes for a file with those bytes)."""
    files = {FOOD_LIST: classes, INGREDIENT_LIST: ingredients, LABELS: labels, TR: train, VAL: val, TE: test}
    for relative, lines in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("".join(f"{line}\n" for line in lines))
    images = {image: jpeg_bytes() for image in (A, B, C)} | (images or {})
    for image, data in images.items():
        if data is not None:
            path = root / "ready_chinese_food" / image.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return root


def names(record) -> list[str]:
    return [ingredient.name for ingredient in record.ingredients]


def test_release_is_read_with_categories_and_ingredients(tmp_path):
    records = read_vireo172_split(write_release(tmp_path, train=(B, A)), "train")
    assert [record.id for record in records] == ["2/5_0.jpg", "1/1_0.jpg"]  # split-file order, no leading slash
    b, a = records
    assert a.dataset == "vireo172" and a.image == str(tmp_path / "ready_chinese_food" / "1" / "1_0.jpg")
    assert (a.category, b.category) == ("Braised pork", "Fried rice")  # FoodList line = class number
    assert a.ingredients == (Ingredient("pork", 0.0),)
    assert b.ingredients == (Ingredient("rice", 0.0), Ingredient("egg", 0.0))  # IngredientList order
    assert a.recipe == () and a.nutrition is None


@pytest.mark.parametrize("split", ["val", "test"])
def test_val_and_test_read_their_own_files(tmp_path, split):
    write_release(tmp_path, val=(C,), test=(A,))
    expected = {"val": ["2/6_1.jpg"], "test": ["1/1_0.jpg"]}[split]
    assert [record.id for record in read_vireo172_split(tmp_path, split)] == expected


def test_the_ingredient_count_comes_from_ingredient_list(tmp_path):
    write_release(tmp_path, ingredients=("pork", "rice", "egg", "scallion", "soy sauce"),
                  labels=(f"{A} 1 -1 -1 -1 1", f"{B} -1 1 1 1 -1"))
    assert [names(record) for record in read_vireo172_split(tmp_path, "train")] == [
        ["pork", "soy sauce"], ["rice", "egg", "scallion"]]


def test_paths_with_or_without_slash_and_any_spacing_match(tmp_path):
    write_release(tmp_path, train=("1/1_0.jpg", B), labels=(f"{A}  1\t-1 -1", "2/5_0.jpg -1 1 1 "))
    assert [names(record) for record in read_vireo172_split(tmp_path, "train")] == [["pork"], ["rice", "egg"]]


BAD_IMAGE = [
    # (case, release overrides, file:line the error names, message (it starts with the skip reason))
    ("no class directory", {"train": (A, "/5_0.jpg")}, f"{TR}:2",
     r"malformed image path: '/5_0.jpg', expected /<class number>/<file name> like /1/10_0.jpg"),
    ("class name for number", {"train": (A, "/Fried rice/5_0.jpg")}, f"{TR}:2", "malformed image path"),
    ("nested path", {"train": (A, "/2/../5_0.jpg")}, f"{TR}:2", "malformed image path"),
    ("class number too large", {"train": (A, "/3/5_0.jpg")}, f"{TR}:2",
     rf"bad class number: 3 in /3/5_0.jpg is not a line of {FOOD_LIST} \(1 to 2\)"),
    ("class number zero", {"train": (A, "/0/5_0.jpg")}, f"{TR}:2", "bad class number: 0"),
    ("too few values", {"labels": (LABEL_LINES[0], f"{B} -1 1")}, f"{LABELS}:2",
     rf"wrong number of values: found 2 after the image path, expected 3 \(one per line of {INGREDIENT_LIST}\)"),
    ("too many values", {"labels": (LABEL_LINES[0], f"{B} -1 1 1 1")}, f"{LABELS}:2",
     "wrong number of values: found 4"),
    ("bad value", {"labels": (LABEL_LINES[0], f"{B} -1 1 0")}, f"{LABELS}:2",
     r"bad label value: field 4 \(ingredient 3, 'egg'\) is '0', expected 1 \(present\) or -1 \(absent\)"),
    ("conflicting label lines", {"labels": (*LABEL_LINES, f"{B} 1 1 1")}, f"{LABELS}:2",
     rf"conflicting labels: {B} has label lines at .*{LABELS}:2 and .*{LABELS}:4 that differ"),
    ("missing image", {"images": {B: None}}, f"{TR}:2",
     r"missing image: .*ready_chinese_food/2/5_0.jpg does not exist"),
]


@pytest.mark.parametrize("overrides, location, message", [case[1:] for case in BAD_IMAGE],
                         ids=[case[0] for case in BAD_IMAGE])
def test_bad_image_raises_naming_file_line_and_value(tmp_path, overrides, location, message):
    write_release(tmp_path, **overrides)
    with pytest.raises(DataFormatError, match=rf"{location}: {message}"):
        read_vireo172_split(tmp_path, "train")


def test_image_listed_twice(tmp_path):
    write_release(tmp_path, train=(A, B, A.lstrip("/")))
    with pytest.raises(DataFormatError, match=rf"{TR}:3: duplicate image: 1/1_0.jpg is listed again in the split "
                                              rf"file \(first at .*{TR}:1\)"):
        read_vireo172_split(tmp_path, "train")
    skipped = SkipCounter()
    records = read_vireo172_split(tmp_path, "train", on_error="skip", skipped=skipped)
    assert [record.id for record in records] == ["1/1_0.jpg", "2/5_0.jpg"]
    assert skipped == {"vireo172/train: DataFormatError: duplicate image": 1}


def test_identical_label_lines_are_one_label(tmp_path):
    write_release(tmp_path, labels=(*LABEL_LINES, f"{B}  -1 1 1"))
    assert [names(record) for record in read_vireo172_split(tmp_path, "train")] == [["pork"], ["rice", "egg"]]


@pytest.mark.parametrize("on_error", ["raise", "skip"])
@pytest.mark.parametrize("labels, reason", [
    ((LABEL_LINES[0],), "no ingredient label in IngreLabel.txt (served with category only)"),
    ((LABEL_LINES[0], f"{B} -1 -1 -1"), "no ingredient marked present (served with category only)"),
], ids=["no label line", "nothing present"])
def test_image_without_ingredients_is_served_with_its_category_and_counted(tmp_path, on_error, labels, reason):
    write_release(tmp_path, labels=labels)
    skipped = SkipCounter()
    records = read_vireo172_split(tmp_path, "train", on_error=on_error, skipped=skipped)
    assert [(record.id, record.category, names(record)) for record in records] == [
        ("1/1_0.jpg", "Braised pork", ["pork"]), ("2/5_0.jpg", "Fried rice", [])]
    assert skipped == {f"vireo172/train: {reason}": 1}


def test_bad_label_line_of_an_image_no_split_lists_does_not_stop_the_run(tmp_path):
    write_release(tmp_path, labels=(*LABEL_LINES, "/2/9_9.jpg 1 0", "not even a path"))
    assert [names(record) for record in read_vireo172_split(tmp_path, "train")] == [["pork"], ["rice", "egg"]]


def test_repeated_ingredient_name_is_listed_once_and_logged(tmp_path, caplog):
    write_release(tmp_path, ingredients=("pork", "egg", "egg"), labels=(LABEL_LINES[0], f"{B} -1 1 1"))
    with caplog.at_level(logging.WARNING, logger="rode_lightning.data.datasets.vireo172.reader"):
        records = read_vireo172_split(tmp_path, "train")
    assert [names(record) for record in records] == [["pork"], ["egg"]]
    assert f"{INGREDIENT_LIST} names 1 ingredient(s) on more than one line, e.g. 'egg'" in caplog.text


@pytest.mark.parametrize("overrides, message", [
    ({"classes": ("Braised pork", "", "Fried rice")}, rf"{FOOD_LIST}:2: empty class name: expected one class name"),
    ({"ingredients": ("pork", "", "rice", "egg")}, rf"{INGREDIENT_LIST}:2: empty ingredient name"),
    ({"classes": ()}, rf"{FOOD_LIST}: no class names"),
], ids=["class gap", "ingredient gap", "no classes"])
def test_bad_name_lists_stop_the_read_in_both_modes(tmp_path, overrides, message):
    write_release(tmp_path, **overrides)
    for on_error in ("raise", "skip"):
        with pytest.raises(DataFormatError, match=message):
            read_vireo172_split(tmp_path, "train", on_error=on_error)


def test_trailing_blank_lines_in_name_lists_are_allowed(tmp_path):
    write_release(tmp_path, classes=("Braised pork", "Fried rice", "", " "), ingredients=("pork", "rice", "egg", ""))
    assert [record.category for record in read_vireo172_split(tmp_path, "train")] == ["Braised pork", "Fried rice"]


@pytest.fixture(scope="module")
def demo_vireo172(tmp_path_factory):
    return generate_demo_vireo172(tmp_path_factory.mktemp("demo_vireo172"), seed=0)


def test_demo_counts_and_categories(demo_vireo172):
    skipped = SkipCounter()
    splits = {split: read_vireo172_split(demo_vireo172, split, skipped=skipped) for split in ("train", "val", "test")}
    assert {split: len(records) for split, records in splits.items()} == {"train": 96, "val": 24, "test": 24}
    assert skipped == {}  # the demo labels every image
    classes = list(CATEGORIES)
    assert (demo_vireo172 / FOOD_LIST).read_text().splitlines() == classes
    assert (demo_vireo172 / INGREDIENT_LIST).read_text().splitlines() == list(INGREDIENTS)
    ids = [record.id for records in splits.values() for record in records]
    assert len(set(ids)) == len(ids)
    for record in (record for records in splits.values() for record in records):
        assert record.category == classes[int(record.id.split("/")[0]) - 1]


def test_demo_ingredients_are_the_drawn_dish(demo_vireo172):
    """Each label line holds a dish of its category (its core ingredients, optional ones of that category only),
    in IngredientList order, and the plate shows every labelled ingredient."""
    order = list(INGREDIENTS)
    for record in read_vireo172_split(demo_vireo172, "train"):
        spec, drawn = CATEGORIES[record.category], names(record)
        assert set(spec.core) <= set(drawn) <= set(spec.core) | set(spec.optional), record.id
        assert drawn == sorted(drawn, key=order.index) and {i.grams for i in record.ingredients} == {0.0}
        pixels = np.asarray(Image.open(record.image).convert("RGB")).reshape(-1, 3).astype(int)
        for name in drawn:
            assert np.abs(pixels - INGREDIENTS[name].colour).max(axis=1).min() <= 4, (record.id, name)


def test_demo_is_deterministic_and_idempotent(tmp_path):
    sizes = {"train": 5, "val": 2, "test": 2}
    first = generate_demo_vireo172(tmp_path / "a", seed=3, sizes=sizes, image_size=16)
    second = generate_demo_vireo172(tmp_path / "b", seed=3, sizes=sizes, image_size=16)
    other = generate_demo_vireo172(tmp_path / "c", seed=4, sizes=sizes, image_size=16)
    assert directory_digest(first) == directory_digest(second) != directory_digest(other)
    before = (first / LABELS).stat().st_mtime_ns
    generate_demo_vireo172(first, seed=3, sizes=sizes, image_size=16)
    assert (first / LABELS).stat().st_mtime_ns == before
    # Other arguments replace the previous demo instead of mixing with it.
    generate_demo_vireo172(first, seed=3, sizes={"train": 1, "val": 1, "test": 1}, image_size=16)
    assert len(list((first / "ready_chinese_food").rglob("*.jpg"))) == 3
    assert len((first / LABELS).read_text().splitlines()) == 3


def test_demo_refuses_to_overwrite_a_directory_it_did_not_write(tmp_path):
    write_release(tmp_path)
    with pytest.raises(FileExistsError, match="not a demo this function wrote"):
        generate_demo_vireo172(tmp_path, sizes={"train": 1, "val": 1, "test": 1})
    assert (tmp_path / TR).read_text() == f"{A}\n{B}\n"
