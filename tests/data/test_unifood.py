from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from rode_lightning.data.datasets.unifood.reader import DataFormatError, SkipCounter, read_unifood_split


def image_bytes(image_format: str) -> bytes:
    # Noise, so that the compressed pixel data is most of the file and a cut at the end lands inside it.
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


# PNG cut at its end keeps its pixels but loses the closing chunk; JPEG cut anywhere is only seen by decoding it.
BAD_IMAGES = {
    "empty.png": (b"", "is not an image format"),
    "text.png": (b"hello", "is not an image format"),
    "cut_end.png": (image_bytes("PNG")[:-8], "is truncated or corrupt"),
    "cut_half.png": (image_bytes("PNG")[: len(image_bytes("PNG")) // 2], "is truncated or corrupt"),
    "cut.jpg": (image_bytes("JPEG")[:-40], "is truncated or corrupt"),
}


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_unreadable_or_truncated_image_names_line_and_image(tmp_path, name):
    data, message = BAD_IMAGES[name]
    write_split(tmp_path, [json.dumps(GOOD), json.dumps({**GOOD, "id": "2", "image": f"images/{name}"})],
                images={name: data})
    with pytest.raises(DataFormatError, match=rf"train.jsonl:2: unreadable image: .*images/{name} {message}"):
        read_unifood_split(tmp_path, "train")
    skipped = SkipCounter()
    assert [r.id for r in read_unifood_split(tmp_path, "train", on_error="skip", skipped=skipped)] == ["1"]
    assert skipped == {"unifood/train: DataFormatError: unreadable image": 1}


def test_good_jpeg_is_accepted(tmp_path):
    write_split(tmp_path, [json.dumps({**GOOD, "image": "images/a.jpg"})], images={"a.jpg": image_bytes("JPEG")})
    assert [r.id for r in read_unifood_split(tmp_path, "train")] == ["1"]
