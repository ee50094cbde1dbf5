"""The in-memory form of one annotated dish, shared by every dataset reader.

Uni-Food and Nutrition5k describe the same things (an image, what is on the plate and how much, what it is worth in
nutrients), so both readers produce :class:`FoodRecord` and everything downstream (prompts, metrics, baselines)
depends only on this type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

NUTRITION_FIELDS: tuple[str, ...] = ("mass_g", "energy_kcal", "fat_g", "carbohydrate_g", "protein_g")
"""Dish-level nutrition fields, in the order the paper's tables list them."""


@dataclass(frozen=True)
class Ingredient:
    name: str
    grams: float


def merge_ingredients(weighed: Iterable[tuple[str, float]], key: Callable[[str], str] = str
                      ) -> tuple[Ingredient, ...]:
    """Ingredients weighed in once or more, one per ``key(name)`` with the grams summed, under the first name seen;
    heaviest first, equal weights in the order first seen (answers list every ingredient once, by weight)."""
    merged: dict[str, list] = {}  # key -> [name, grams]
    for name, grams in weighed:
        entry = merged.setdefault(key(name), [name, 0.0])
        entry[1] += grams
    ordered = sorted(merged.values(), key=lambda entry: -entry[1])  # a stable sort: ties keep their order
    return tuple(Ingredient(name, grams) for name, grams in ordered)


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
