"""The demo's food world: synthetic dishes and their pictures, which every dataset's demo copy writes in its own layout.

Real food datasets cannot be downloaded here, so the demo draws its own plates. The pictures carry the information
the tasks ask for, so that a model has something real to learn:

* every ingredient has its own colour and shape, so *which* ingredients are on the plate is visible;
* each ingredient's drawn area is proportional to its grams, so *how much* is visible too;
* nutrition is computed from the grams with real per-100 g values (USDA-style figures, rounded);
* the category follows from the combination of ingredients, and the recipe from category and ingredients.

Everything is drawn from one seeded ``numpy`` generator, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rode_lightning.conventions import NUTRITION_FIELDS



@dataclass(frozen=True)
class IngredientSpec:
    colour: tuple[int, int, int]
    shape: str  # "circle", "square", "triangle", "diamond"
    kcal: float  # per 100 g
    fat: float
    carbohydrate: float
    protein: float
    grams: tuple[float, float]  # typical range on a plate
    preparation: str  # verb used in recipe steps


INGREDIENTS: dict[str, IngredientSpec] = {
    "rice": IngredientSpec((245, 245, 235), "circle", 130, 0.3, 28.0, 2.7, (100, 250), "cook"),
    "tomato": IngredientSpec((220, 30, 30), "circle", 18, 0.2, 3.9, 0.9, (40, 150), "slice"),
    "lettuce": IngredientSpec((120, 200, 60), "diamond", 15, 0.2, 2.9, 1.4, (30, 100), "wash"),
    "cucumber": IngredientSpec((170, 230, 150), "square", 15, 0.1, 3.6, 0.7, (40, 120), "slice"),
    "egg": IngredientSpec((255, 215, 0), "circle", 155, 11.0, 1.1, 13.0, (50, 120), "beat"),
    "chicken": IngredientSpec((230, 190, 150), "square", 165, 3.6, 0.0, 31.0, (80, 200), "grill"),
    "beef": IngredientSpec((120, 60, 40), "square", 250, 15.0, 0.0, 26.0, (80, 220), "sear"),
    "salmon": IngredientSpec((250, 130, 110), "triangle", 208, 13.0, 0.0, 20.0, (80, 180), "bake"),
    "pasta": IngredientSpec((240, 220, 130), "diamond", 131, 1.1, 25.0, 5.0, (100, 250), "boil"),
    "broccoli": IngredientSpec((20, 110, 40), "triangle", 34, 0.4, 7.0, 2.8, (40, 120), "steam"),
    "carrot": IngredientSpec((250, 140, 20), "triangle", 41, 0.2, 10.0, 0.9, (30, 100), "dice"),
    "potato": IngredientSpec((200, 160, 90), "circle", 77, 0.1, 17.0, 2.0, (100, 250), "roast"),
    "cheese": IngredientSpec((255, 180, 40), "square", 402, 33.0, 1.3, 25.0, (20, 60), "grate"),
    "bread": IngredientSpec((190, 130, 70), "diamond", 265, 3.2, 49.0, 9.0, (40, 120), "toast"),
    "onion": IngredientSpec((150, 60, 150), "diamond", 40, 0.1, 9.3, 1.1, (20, 80), "chop"),
    "avocado": IngredientSpec((90, 130, 40), "circle", 160, 15.0, 9.0, 2.0, (40, 120), "mash"),
}


@dataclass(frozen=True)
class CategorySpec:
    core: tuple[str, ...]
    optional: tuple[str, ...]
    finish: str  # last recipe step


CATEGORIES: dict[str, CategorySpec] = {
    "salad": CategorySpec(("lettuce", "tomato", "cucumber"), ("onion", "avocado", "cheese", "egg"),
                          "Toss everything in a bowl with dressing."),
    "fried rice": CategorySpec(("rice", "egg", "carrot"), ("onion", "chicken", "broccoli"),
                               "Stir fry everything in a hot wok."),
    "pasta bolognese": CategorySpec(("pasta", "beef", "tomato"), ("onion", "cheese", "carrot"),
                                    "Simmer the sauce and serve it over the pasta."),
    "steak dinner": CategorySpec(("beef", "potato", "broccoli"), ("carrot", "onion"),
                                 "Rest the meat and plate it with the sides."),
    "salmon bowl": CategorySpec(("salmon", "rice", "avocado"), ("cucumber", "carrot"),
                                "Arrange everything over the rice."),
    "chicken plate": CategorySpec(("chicken", "potato", "carrot"), ("broccoli", "lettuce"),
                                  "Plate the chicken with the vegetables."),
    "sandwich": CategorySpec(("bread", "cheese", "lettuce"), ("tomato", "egg", "chicken"),
                             "Layer the fillings between the bread."),
    "omelette": CategorySpec(("egg", "cheese", "onion"), ("tomato", "broccoli", "bread"),
                             "Cook the eggs in a pan and fold the omelette."),
}


def nutrition_of(ingredients: list[dict]) -> dict[str, float]:
    """Dish nutrition as the sum over ingredients of grams x per-100 g values."""
    totals = dict.fromkeys(NUTRITION_FIELDS, 0.0)
    for item in ingredients:
        spec, grams = INGREDIENTS[item["name"]], item["grams"]
        totals["mass_g"] += grams
        totals["energy_kcal"] += grams * spec.kcal / 100
        totals["fat_g"] += grams * spec.fat / 100
        totals["carbohydrate_g"] += grams * spec.carbohydrate / 100
        totals["protein_g"] += grams * spec.protein / 100
    return {name: round(value, 1) for name, value in totals.items()}


def recipe_of(category: str, ingredients: list[dict]) -> list[str]:
    """Recipe steps: prepare each ingredient with its own verb, then the category's finishing step."""
    steps = [f"{INGREDIENTS[item['name']].preparation.capitalize()} the {item['name']}." for item in ingredients]
    return steps + [CATEGORIES[category].finish]


def sample_dish(rng: np.random.Generator) -> tuple[str, list[dict]]:
    """A category, then its core ingredients plus up to two optional ones, each with grams in its typical range."""
    category = list(CATEGORIES)[rng.integers(len(CATEGORIES))]
    spec = CATEGORIES[category]
    extras = rng.choice(len(spec.optional), size=rng.integers(0, 3), replace=False)
    names = list(spec.core) + [spec.optional[i] for i in sorted(extras)]
    ingredients = []
    for name in names:
        low, high = INGREDIENTS[name].grams
        ingredients.append({"name": name, "grams": float(round(rng.uniform(low, high)))})
    # Heaviest first: the order a person would list them, and the order answers use.
    ingredients.sort(key=lambda item: -item["grams"])
    return category, ingredients


def draw_dish(ingredients: list[dict], rng: np.random.Generator, size: int) -> Image.Image:
    """A plate seen from above; each ingredient a shape of its colour whose area is proportional to its grams."""
    image = Image.new("RGB", (size, size), (60, 60, 70))
    draw = ImageDraw.Draw(image)
    draw.ellipse([size * 0.02, size * 0.02, size * 0.98, size * 0.98], fill=(235, 235, 240))
    # Place ingredients on a ring of slots so they do not hide each other; the rotation is random.
    slots = len(ingredients)
    offset = rng.uniform(0, 2 * math.pi)
    for index, item in enumerate(ingredients):
        spec = INGREDIENTS[item["name"]]
        # 250 g fills a disc of radius 0.2 * size; area grows linearly with grams.
        radius = 0.2 * size * math.sqrt(item["grams"] / 250.0)
        angle = offset + 2 * math.pi * index / slots
        distance = 0.28 * size if slots > 1 else 0.0
        cx = size / 2 + distance * math.cos(angle) + rng.uniform(-0.02, 0.02) * size
        cy = size / 2 + distance * math.sin(angle) + rng.uniform(-0.02, 0.02) * size
        _draw_shape(draw, spec.shape, cx, cy, radius, spec.colour)
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        half = r * math.sqrt(math.pi) / 2  # same area as the circle of radius r
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=colour)
    elif shape == "triangle":
        side = r * math.sqrt(4 * math.pi / math.sqrt(3))
        height = side * math.sqrt(3) / 2
        draw.polygon([(cx, cy - 2 * height / 3), (cx - side / 2, cy + height / 3), (cx + side / 2, cy + height / 3)],
                     fill=colour)
    elif shape == "diamond":
        half_diagonal = r * math.sqrt(math.pi / 2)
        draw.polygon([(cx, cy - half_diagonal), (cx + half_diagonal, cy), (cx, cy + half_diagonal),
                      (cx - half_diagonal, cy)], fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def directory_digest(root: str | Path) -> str:
    """SHA-256 over every file's relative path and bytes, to check that generation is reproducible."""
    digest = hashlib.sha256()
    root = Path(root)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
