"""Uni-Food's own checks of a record (its JSON fields, duplicate ids, missing images). What every reader does with
bad input (malformed lines, unreadable images, skipping and counting, missing files, non-UTF-8 text, held-out val)
is the reader contract's, ``test_reader_contract.py``."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from rode_lightning.data.datasets.unifood.reader import DataFormatError, read_unifood_split

ALL_TRAIN = 1e-9  # a hold-out share too small to take either id of these files: train.jsonl is all train


def image_bytes(image_format: str) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def write_split(root, lines, images=None):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    for name, data in {"a.png": image_bytes("PNG"), **(images or {})}.items():
        (root / "images" / name).write_bytes(data)
    (root / "annotations" / "train.jsonl").write_text("\n".join(lines) + "\n")


GOOD = {"id": "1", "image": "images/a.png", "category": "salad",
        "ingredients": [{"name": "tomato", "grams": 50}], "recipe": ["Slice."],
        "nutrition": {"mass_g": 50, "energy_kcal": 9, "fat_g": 0.1, "carbohydrate_g": 2, "protein_g": 0.5}}


@pytest.mark.parametrize("bad, message", [
    (json.dumps({**GOOD, "image": "images/missing.png"}), "missing image"),
    (json.dumps({**GOOD, "ingredients": []}), "no ingredients"),
    (json.dumps({**GOOD, "ingredients": [{"name": "tomato", "grams": -1}]}),
     r"bad ingredient grams: the grams of 'tomato' is -1, expected a finite number >= 0"),
    (json.dumps({**GOOD, "nutrition": {**GOOD["nutrition"], "fat_g": -3}}),
     r"bad nutrition value: fat_g is -3, expected a number in \[0, 1000\]"),
    (json.dumps({**GOOD, "nutrition": {**GOOD["nutrition"], "protein_g": "many"}}),
     "bad nutrition value: protein_g is 'many'"),  # a string in JSON is not a number, even "5"
    (json.dumps({**GOOD, "nutrition": {**GOOD["nutrition"], "carbs": 3}}), r"unknown nutrition field: \['carbs'\]"),
    (json.dumps({**GOOD, "id": "1"}), "duplicate id '1'"),
], ids=["missing image", "no ingredients", "negative grams", "negative nutrition", "text nutrition",
        "unknown nutrition field", "duplicate id"])
def test_bad_record_names_file_and_line(tmp_path, bad, message):
    write_split(tmp_path, [json.dumps(GOOD), bad])
    with pytest.raises(DataFormatError, match=rf"train.jsonl:2: .*{message}"):
        read_unifood_split(tmp_path, "train", val_fraction=ALL_TRAIN)


def test_nutrition_keeps_the_fields_given(tmp_path):
    write_split(tmp_path, [json.dumps({**GOOD, "nutrition": {"energy_kcal": 9, "protein_g": 0.5}})])
    [record] = read_unifood_split(tmp_path, "train", val_fraction=ALL_TRAIN)
    assert record.nutrition == {"energy_kcal": 9.0, "protein_g": 0.5}  # absent fields stay absent, never 0
