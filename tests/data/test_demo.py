from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rode_lightning.data.datasets.unifood.demo import generate_demo_unifood
from rode_lightning.data.dishes import INGREDIENTS, directory_digest, nutrition_of
from rode_lightning.data.datasets.unifood.reader import read_unifood_split

SPLITS = {"train": 6, "val": 2}


def test_same_seed_gives_identical_files(tmp_path):
    first = generate_demo_unifood(tmp_path / "a", seed=3, splits=SPLITS, image_size=32)
    second = generate_demo_unifood(tmp_path / "b", seed=3, splits=SPLITS, image_size=32)
    other = generate_demo_unifood(tmp_path / "c", seed=4, splits=SPLITS, image_size=32)
    assert directory_digest(first) == directory_digest(second)
    assert directory_digest(first) != directory_digest(other)


def test_regeneration_with_other_parameters_replaces_old_files(tmp_path):
    generate_demo_unifood(tmp_path, seed=0, splits={"train": 5}, image_size=32)
    generate_demo_unifood(tmp_path, seed=0, splits={"train": 2}, image_size=32)
    assert len(list((tmp_path / "images").iterdir())) == 2


def test_nutrition_follows_from_ingredient_grams(demo_root):
    for record in read_unifood_split(demo_root, "train"):
        expected = nutrition_of([{"name": i.name, "grams": i.grams} for i in record.ingredients])
        assert record.nutrition == expected
        rice = INGREDIENTS["rice"]
        assert rice.kcal == 130  # a real per-100 g figure, not a placeholder
    one = nutrition_of([{"name": "rice", "grams": 200.0}, {"name": "egg", "grams": 50.0}])
    assert one["mass_g"] == 250.0
    assert one["energy_kcal"] == pytest.approx(2 * 130 + 0.5 * 155, abs=0.05)
    assert one["protein_g"] == pytest.approx(2 * 2.7 + 0.5 * 13.0, abs=0.05)


def test_images_show_each_ingredient_colour_in_proportion_to_grams(tmp_path):
    root = generate_demo_unifood(tmp_path, seed=1, splits={"train": 20}, image_size=96)
    for line in (root / "annotations" / "train.jsonl").read_text().splitlines():
        record = json.loads(line)
        pixels = np.asarray(Image.open(root / record["image"]).convert("RGB")).reshape(-1, 3)
        areas = {}
        for item in record["ingredients"]:
            colour = np.array(INGREDIENTS[item["name"]].colour)
            areas[item["name"]] = int((np.abs(pixels - colour).sum(axis=1) == 0).sum())
            assert areas[item["name"]] > 0, f"{item['name']} not visible in {record['image']}"
        # Ingredients are sorted heaviest first; drawn areas follow grams (allowing for rasterisation).
        heaviest, lightest = record["ingredients"][0], record["ingredients"][-1]
        if heaviest["grams"] > 2 * lightest["grams"]:
            assert areas[heaviest["name"]] > areas[lightest["name"]]


def test_records_carry_every_task(demo_root):
    records = read_unifood_split(demo_root, "val")
    assert len(records) == 8
    for record in records:
        assert record.category and record.ingredients and record.recipe and record.nutrition
        assert record.recipe[-1].endswith(".")
