from __future__ import annotations

import json

import pytest

from rode_lightning.data.unifood import DataFormatError, SkipCounter, read_unifood_split


def write_split(root, lines):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "images" / "a.png").write_bytes(b"")
    (root / "annotations" / "train.jsonl").write_text("\n".join(lines) + "\n")


GOOD = {"id": "1", "image": "images/a.png", "category": "salad",
        "ingredients": [{"name": "tomato", "grams": 50}], "recipe": ["Slice."],
        "nutrition": {"mass_g": 50, "energy_kcal": 9, "fat_g": 0.1, "carbohydrate_g": 2, "protein_g": 0.5}}


@pytest.mark.parametrize("bad, message", [
    ("{not json", "malformed JSON"),
    (json.dumps({**GOOD, "image": "images/missing.png"}), "missing image"),
    (json.dumps({**GOOD, "ingredients": []}), "no ingredients"),
    (json.dumps({**GOOD, "nutrition": {**GOOD["nutrition"], "fat_g": -3}}), "bad nutrition value: fat_g=-3"),
    (json.dumps({**GOOD, "nutrition": {**GOOD["nutrition"], "protein_g": "many"}}), "protein_g='many'"),
    (json.dumps({**GOOD, "id": "1"}), "duplicate id '1'"),
])
def test_bad_record_names_file_and_line(tmp_path, bad, message):
    write_split(tmp_path, [json.dumps(GOOD), bad])
    with pytest.raises(DataFormatError, match=rf"train.jsonl:2: .*{message}"):
        read_unifood_split(tmp_path, "train")


def test_bad_records_can_be_skipped_and_counted(tmp_path):
    write_split(tmp_path, [json.dumps(GOOD), "{oops", json.dumps({**GOOD, "id": "2", "ingredients": []})])
    skipped = SkipCounter()
    records = read_unifood_split(tmp_path, "train", on_error="skip", skipped=skipped)
    assert [record.id for record in records] == ["1"]
    assert sum(skipped.values()) == 2
    assert "malformed JSON" in skipped.report() and "no ingredients" in skipped.report()


def test_missing_split_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"annotations/val.jsonl"):
        read_unifood_split(tmp_path, "val")
