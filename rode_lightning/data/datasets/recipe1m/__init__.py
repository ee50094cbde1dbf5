"""Recipe1M as released (Salvador et al., CVPR 2017), with Recipe1M+'s nutrition file where it is present."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from rode_lightning.data.datasets.base import FoodDataset, ReadRequest
from rode_lightning.data.datasets.recipe1m.demo import DEMO_MIN_INGREDIENT_COUNT, generate_demo_recipe1m
from rode_lightning.data.datasets.recipe1m.inverse_cooking import DEFAULT_MIN_INGREDIENT_COUNT
from rode_lightning.data.datasets.recipe1m.reader import read_recipe1m_split
from rode_lightning.data.records import FoodRecord


@dataclass(frozen=True)
class Recipe1MOptions:
    """InverseCooking's filters (``inverse_cooking.RecipeRules``): ingredient clusters seen fewer than
    ``min_ingredient_count`` times in train are no ingredient; a recipe is kept with ``min_ingredients`` to
    ``max_ingredients - 1`` ingredients and ``min_instructions`` to ``max_instructions - 1`` steps of at least
    ``min_instruction_chars`` characters in all. ``None`` for ``min_ingredient_count``: 10, or 2 for the demo copy,
    whose few hundred recipes would lose real ingredients to 10."""

    min_ingredient_count: int | None = None
    min_ingredients: int = 2
    max_ingredients: int = 20
    min_instructions: int = 2
    max_instructions: int = 20
    min_instruction_chars: int = 20


class Recipe1M(FoodDataset):
    name = "recipe1m"
    title = "Recipe1M"
    tasks = ("category", "ingredients", "recipe", "nutrition")
    options = Recipe1MOptions
    layout = "layer1.json, layer2.json, det_ingrs.json, images/, optionally recipes_with_nutritional_info.json"

    def read(self, root: Path, options: Recipe1MOptions, request: ReadRequest) -> list[FoodRecord]:
        rules = asdict(options)
        if rules["min_ingredient_count"] is None:
            rules["min_ingredient_count"] = DEMO_MIN_INGREDIENT_COUNT if request.demo else DEFAULT_MIN_INGREDIENT_COUNT
        return read_recipe1m_split(root, request.split, request.on_error, request.skipped, **rules)

    def write_demo(self, root: Path, seed: int, sizes: dict[str, int] | None) -> None:
        generate_demo_recipe1m(root, seed=seed, sizes=sizes)
