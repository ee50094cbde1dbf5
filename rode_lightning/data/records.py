"""The in-memory form of one annotated dish, shared by every dataset reader.

Uni-Food and Nutrition5k describe the same things (an image, what is on the plate and how much, what it is worth in
nutrients), so both readers produce :class:`FoodRecord` and everything downstream (prompts, metrics, baselines)
depends only on this type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NUTRITION_FIELDS: tuple[str, ...] = ("mass_g", "energy_kcal", "fat_g", "carbohydrate_g", "protein_g")
"""Dish-level nutrition fields, in the order the paper's tables list them."""


@dataclass(frozen=True)
class Ingredient:
    name: str
    grams: float


@dataclass(frozen=True)
class FoodRecord:
    """One dish. Fields a dataset does not provide are ``None`` (or empty) and the matching tasks are not built."""

    id: str
    image: str  # absolute path
    dataset: str
    category: str | None = None
    ingredients: tuple[Ingredient, ...] = ()
    recipe: tuple[str, ...] = ()
    nutrition: dict[str, float] | None = field(default=None, hash=False)

    @property
    def ingredient_names(self) -> list[str]:
        return [ingredient.name for ingredient in self.ingredients]
