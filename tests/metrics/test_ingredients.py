from __future__ import annotations

import pytest
import torch

from rode_lightning.metrics.category import CategoryAccuracy
from rode_lightning.metrics.ingredients import IngredientIoU, most_frequent_baseline
from rode_lightning.metrics.parsing import normalize_ingredient, parse_ingredients


def test_iou_on_hand_computed_examples():
    metric = IngredientIoU()
    # Sample 1: P={rice, egg, pea}, T={rice, egg, carrot}: tp 2, fp 1, fn 1, IoU 2/4.
    # Sample 2: P={tomato}, T={tomato}: tp 1, IoU 1.
    # Sample 3: P={} , T={beef, onion}: fn 2, IoU 0.
    metric.update(["rice, egg, peas", "Tomatoes.", ""], ["rice, egg, carrot", ["tomato"], ["beef", "onion"]])
    result = metric.compute()
    assert result["dataset_iou"].item() == pytest.approx(3 / 7)
    assert result["sample_iou"].item() == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_iou_accumulates_across_updates_and_resets():
    metric = IngredientIoU()
    metric.update(["a"], ["a"])
    metric.update(["b"], ["c"])
    assert metric.compute()["dataset_iou"].item() == pytest.approx(1 / 3)
    metric.reset()
    metric.update(["x, y"], ["x"])
    assert metric.compute()["sample_iou"].item() == pytest.approx(0.5)


@pytest.mark.parametrize("text, expected", [
    ("rice, egg, carrot", {"rice", "egg", "carrot"}),
    ("The ingredients are rice, eggs and carrots.", {"rice", "egg", "carrot"}),
    ("1. Tomatoes\n2. Salt & Pepper", {"tomato", "salt", "pepper"}),
    ("cherries; potatoes", {"cherry", "potato"}),
    ("", set()),
])
def test_parse_ingredients(text, expected):
    assert parse_ingredients(text) == expected


def test_normalize_ingredient():
    assert normalize_ingredient("Chicken Breasts!") == "chicken breast"
    assert normalize_ingredient("2 cups of rice") == "cup of rice"
    assert normalize_ingredient("Mac & Cheese") == "mac and cheese"


def test_most_frequent_baseline_predicts_top_k():
    train = [["rice", "egg"], ["rice", "beef"], ["rice", "egg"]]  # k = 2 -> {rice, egg}
    result = most_frequent_baseline(train, [["rice", "egg"], ["beef"]])
    # tp 2, fp 2 (rice, egg for sample 2), fn 1 -> 2/5; sample IoU (1 + 0) / 2
    assert result["dataset_iou"] == pytest.approx(2 / 5)
    assert result["sample_iou"] == pytest.approx(0.5)


def test_category_accuracy():
    metric = CategoryAccuracy()
    metric.update(["Fried rice.", "This dish is a salad", "omelette"], ["fried rice", "salad", "sandwich"])
    assert metric.compute().item() == pytest.approx(2 / 3)
    assert isinstance(metric.compute(), torch.Tensor)
