from __future__ import annotations

import random
import re

import pytest
import torch

from rode_lightning.conventions import normalize_ingredient
from rode_lightning.metrics.answers import structured_answer
from rode_lightning.metrics.category import CategoryAccuracy
from rode_lightning.metrics.ingredients import IngredientIoU, most_frequent_baseline
from rode_lightning.metrics.parsing import parse_ingredients


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
    ("rice, egg, carrot", ["rice", "egg", "carrot"]),
    ("carrot, egg, rice", ["carrot", "egg", "rice"]),  # the answer's order, not sorted
    ("The ingredients are rice, eggs and carrots.", ["rice", "egg", "carrot"]),
    ("1. Tomatoes\n2. Salt & Pepper", ["tomato", "salt", "pepper"]),
    ("cherries; potatoes", ["cherry", "potato"]),
    ("rice, egg, rice, Eggs", ["rice", "egg"]),  # repeats counted once, where first named
    ("", []),
])
def test_parse_ingredients(text, expected):
    assert parse_ingredients(text) == expected


def _previous_parse_ingredients(text: str) -> set[str]:
    """The parser before answers in markdown and prose were read, kept to pin the trained format to it."""
    separators = re.compile(r",|;|&|\n|\band\b|\bwith\b|\u2022|(?:^|\s)\d+[.)]\s")
    lead_in = re.compile(r"^\s*(?:the\s+)?(?:main\s+)?ingredients?\s*(?:are|is|include|:)\s*", re.IGNORECASE)
    names = (normalize_ingredient(part) for part in separators.split(lead_in.sub("", text.strip())))
    return {name for name in names if name}


# Names as the datasets write them (Nutrition5k's and Recipe1M's vocabularies), including the awkward ones: "&" and
# "and" and "with" inside a name, digits, words that are also units or quantities elsewhere.
DATASET_NAMES = ["white rice", "Olive oil", "soy sauce", "chicken breast", "tomatoes", "mac & cheese", "half and half",
                 "chicken with skin", "7 up", "2% milk", "extra virgin olive oil", "whole milk", "mixed greens",
                 "cream of mushroom soup", "baking_powder", "green onions", "cherry tomatoes", "salt", "black pepper",
                 "berries", "potatoes", "brussels sprouts", "egg", "cottage cheese", "sweet potato", "garlic clove",
                 "bread", "cheese pizza", "pork", "wheat berry", "spinach", "sour cream"]


def test_trained_format_parses_as_before():
    # Our answers are the dataset names joined with ", " (prompts.answer_for); their parse must not move.
    rng = random.Random(0)
    for _ in range(300):
        names = rng.sample(DATASET_NAMES, rng.randint(1, 8))
        text = ", ".join(names)
        parsed = parse_ingredients(text)
        assert set(parsed) == _previous_parse_ingredients(text), text
        assert len(parsed) == len(set(parsed))
        # In the answer's order: each name's words come out where the name stood.
        expected_order = list(dict.fromkeys(
            name for part in names for name in sorted(_previous_parse_ingredients(part),
                                                      key=normalize_ingredient(part).find)))
        assert parsed == expected_order, text


def test_parse_ingredients_never_raises():
    fragments = ["rice", "**", "Ingredients:", "|", "---", "\n", "- ", "1.", "(", ")", "such as", "<think>",
                 "</think>", "<answer>", "200 g", "a pinch of", ",", "and", "with", ":", "which", "é", "9" * 50]
    rng = random.Random(0)
    for _ in range(300):
        text = " ".join(rng.choice(fragments) for _ in range(rng.randint(0, 20)))
        parsed = parse_ingredients(text)
        assert isinstance(parsed, list) and all(isinstance(name, str) and name for name in parsed), text
    assert parse_ingredients(None) == []  # type: ignore[arg-type]


def test_structured_answer_keeps_the_answer_order():
    assert structured_answer("ingredients", "rice, egg, carrot") == {"ingredients": ["rice", "egg", "carrot"]}
    assert structured_answer("ingredients", "**Ingredients:**\n- Tomatoes\n- 2 eggs\n- Basil") == {
        "ingredients": ["tomato", "egg", "basil"]}


def test_iou_reads_markdown_predictions_as_sets():
    metric = IngredientIoU()
    # P = {egg, rice, pea} in a LLaVA-style list, T = {rice, egg, carrot}: tp 2, fp 1, fn 1 -> 2/4.
    metric.update(["Here are the ingredients:\n- 2 eggs\n- 200 g rice\n- peas (green)"], ["rice, egg, carrot"])
    assert metric.compute()["dataset_iou"].item() == pytest.approx(2 / 4)


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
