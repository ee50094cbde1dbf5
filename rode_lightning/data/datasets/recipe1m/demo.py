"""A small synthetic Recipe1M (with Recipe1M+'s nutrition file), written in the release's own layout, for the demo
and the tests.

It exists so that the Recipe1M reader runs on every machine, not only where the ~100 GB release is downloaded. The
plates, the ingredient table and the per-100 g values are those of the Uni-Food demo (:mod:`demo`); only the files
follow Recipe1M (:mod:`recipe1m`):

* ``layer1.json``: ids of ten hex digits like the release's, titles from the category names in mixed case ("Fried
  Rice", "fried rice"), ingredient lines with quantities ("200 g rice"), instructions from :func:`recipe_of`, the
  three partitions interleaved;
* ``det_ingrs.json``: the detected name of every line, mostly the plain name, sometimes a variant that
  InverseCooking's rules fold back into it ("Tomatoes", "cheddar cheese", "chicken breast"); the extra lines "salt",
  "water" and "pepper" have ``valid`` false, so they never become ingredients;
* one train recipe has saffron, seen once in train, so below :data:`DEMO_MIN_INGREDIENT_COUNT`; one test recipe has
  parsley, never seen in train, so outside the vocabulary: both are dropped, the threshold and the train-only
  vocabulary each visible;
* ``layer2.json`` and JPEG images under ``images/<partition>/<c0>/<c1>/<c2>/<c3>/``, a quarter of the recipes with a
  second image (the reader takes the first); per split, ``missing_images`` recipes have none: the first of them is
  absent from layer2, the others are listed with no file (a dead link), so both skip paths run;
* ``recipes_with_nutritional_info.json`` (``with_nutrition``) for about 3/4 of the recipes, per-ingredient grams,
  kcal, fat and protein from the table; saturates, sodium and sugars, which the reader does not use, are filler
  derived from them.

Everything comes from one seeded ``numpy`` generator: the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rode_lightning.data.dishes import INGREDIENTS, draw_dish, recipe_of, sample_dish
from rode_lightning.data.datasets.recipe1m.reader import (DETECTIONS, LAYER1, LAYER2, NUTRITION_FILE, SPLITS,
                                                         recipe_image)
from rode_lightning.data.demo_cache import DemoCopy, check_sizes
from rode_lightning.progress import progress

DEFAULT_SIZES: dict[str, int] = {"train": 96, "val": 24, "test": 24}

DEMO_MIN_INGREDIENT_COUNT = 2
"""The ``min_ingredient_count`` to read the demo with: it drops saffron (one train recipe) and keeps every table
ingredient. With the default sizes the rarest table ingredient is in 6 to 16 train recipes depending on the seed
(seeds 0-29; 12 for seed 0), so InverseCooking's 10 would drop one for about a third of the seeds."""

# Detected-name variants that InverseCooking's clustering or plural merging maps back to the table name.
_VARIANTS: dict[str, str] = {"tomato": "Tomatoes", "egg": "eggs", "carrot": "carrots", "cheese": "cheddar cheese",
                             "onion": "red onion", "chicken": "chicken breast"}
_INVALID_LINES: tuple[tuple[str, str], ...] = (("1 pinch of salt", "salt"), ("2 cups water", "water"),
                                               ("freshly ground pepper", "pepper"))
_MARKER = ".demo_recipe1m"
_LAYOUT = (LAYER1, LAYER2, DETECTIONS, NUTRITION_FILE, "images")


def generate_demo_recipe1m(root: str | Path, seed: int = 0, sizes: dict[str, int] | None = None,
                           image_size: int = 96, with_nutrition: bool = True, missing_images: int = 2) -> Path:
    """Write a demo Recipe1M under ``root`` and return ``root``.

    ``sizes`` gives, per split (``train``, ``val``, ``test``), the recipes that have an image; each split also has
    ``missing_images`` recipes without one. Generation is skipped when the marker file records the same arguments;
    with other arguments the previous demo files are replaced. A directory that holds the layout but no marker (a
    real copy of the release, say) is never deleted: that is an error.
    """
    root = Path(root)
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    check_sizes(sizes, SPLITS, missing_images=missing_images)
    copy = DemoCopy(root, _MARKER, {"seed": seed, "sizes": sizes, "image_size": image_size,
                                    "with_nutrition": with_nutrition, "missing_images": missing_images, "version": 1},
                    _LAYOUT, "Recipe1M")
    return copy.ensure(lambda: _write_copy(root, seed, sizes, image_size, with_nutrition, missing_images))


def _write_copy(root: Path, seed: int, sizes: dict[str, int], image_size: int, with_nutrition: bool,
                missing_images: int) -> None:
    rng = np.random.default_rng(seed)
    used_ids: set[str] = set()
    recipes = []
    for split, count in sizes.items():
        listed = count + missing_images
        without = rng.choice(listed, size=min(missing_images, listed), replace=False).tolist()
        for index in progress(range(listed), f"generating demo Recipe1M {split}", "recipe"):
            extra = ()
            if index == 0 and split == "train":
                extra = (("1 pinch saffron", "saffron", True),)
            elif index == 0 and split == "test":
                extra = (("1 sprig fresh parsley", "fresh parsley", True),)
            image_state = "present"
            if index in without:
                image_state = "unlisted" if index == without[0] else "dead link"
            recipes.append(_recipe(rng, used_ids, split, image_state, extra))
    order = rng.permutation(len(recipes)).tolist()  # the release interleaves its partitions
    recipes = [recipes[index] for index in order]

    layer1, detections, layer2, nutrition = [], [], [], []
    for recipe in progress(recipes, "writing demo Recipe1M images", "recipe"):
        layer1.append(recipe["layer1"])
        detections.append(recipe["det_ingrs"])
        if recipe["image_state"] != "unlisted":
            layer2.append({"id": recipe["layer1"]["id"],
                           "images": [{"id": image_id, "url": f"http://images.example.com/{image_id}"}
                                      for image_id in recipe["image_ids"]]})
        if recipe["image_state"] == "present":
            for image_id in recipe["image_ids"]:
                path = recipe_image(root, recipe["layer1"]["partition"], image_id)
                path.parent.mkdir(parents=True, exist_ok=True)
                draw_dish(recipe["dish"], rng, image_size).save(path, format="JPEG", quality=90)
        if with_nutrition and rng.random() < 0.75:
            nutrition.append(_nutrition_entry(recipe["layer1"], recipe["dish"]))
    files = {LAYER1: layer1, DETECTIONS: detections, LAYER2: layer2}
    if with_nutrition:
        files[NUTRITION_FILE] = nutrition
    for name, data in files.items():
        (root / name).write_text(json.dumps(data, indent=1) + "\n")


def _new_id(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        recipe_id = f"{int(rng.integers(16 ** 10)):010x}"
        if recipe_id not in used:
            used.add(recipe_id)
            return recipe_id


def _recipe(rng: np.random.Generator, used_ids: set[str], split: str, image_state: str,
            extra: tuple[tuple[str, str, bool], ...]) -> dict:
    category, dish = sample_dish(rng)
    recipe_id = _new_id(rng, used_ids)
    title = (category, category.title(), category.capitalize())[int(rng.integers(3))]
    # (layer1 line, detected name, valid)
    lines = [(f"{item['grams']:g} g {item['name']}",
              _VARIANTS[item["name"]] if item["name"] in _VARIANTS and rng.random() < 0.25 else item["name"], True)
             for item in dish]
    lines += [(line, name, False) for line, name in _INVALID_LINES if rng.random() < 0.3]
    lines += list(extra)
    image_ids = [f"{_new_id(rng, used_ids)}.jpg" for _ in range(2 if rng.random() < 0.25 else 1)]
    layer1 = {"id": recipe_id, "title": title, "ingredients": [{"text": line} for line, _, _ in lines],
              "instructions": [{"text": step} for step in recipe_of(category, dish)], "partition": split,
              "url": f"http://www.example.com/recipe/{recipe_id}"}
    det_ingrs = {"id": recipe_id, "ingredients": [{"text": name} for _, name, _ in lines],
                 "valid": [valid for _, _, valid in lines]}
    return {"layer1": layer1, "det_ingrs": det_ingrs, "image_ids": image_ids, "image_state": image_state,
            "dish": dish}


def _nutrition_entry(layer1: dict, dish: list[dict]) -> dict:
    """A Recipe1M+ nutrition record: per-ingredient totals (grams, kcal), per-100 g values and FSA traffic lights."""
    per_ingredient = []
    for item in dish:
        spec, grams = INGREDIENTS[item["name"]], item["grams"]
        per_ingredient.append({"fat": round(grams * spec.fat / 100, 6), "nrg": round(grams * spec.kcal / 100, 6),
                               "pro": round(grams * spec.protein / 100, 6),
                               # Not in the table and not read: filler of a plausible size.
                               "sat": round(grams * spec.fat * 0.35 / 100, 6), "sod": round(grams * 0.05, 6),
                               "sug": round(grams * spec.carbohydrate * 0.1 / 100, 6)})
    mass = sum(item["grams"] for item in dish)
    per_100g = {name: sum(values[key] for values in per_ingredient) * 100 / mass
                for name, key in (("energy", "nrg"), ("fat", "fat"), ("protein", "pro"), ("saturates", "sat"),
                                  ("sugars", "sug"))}
    per_100g["salt"] = sum(values["sod"] for values in per_ingredient) * 2.5 / 1000 * 100 / mass  # the README's
    per_100g = {name: round(per_100g[name], 6) for name in ("energy", "fat", "protein", "salt", "saturates",
                                                             "sugars")}
    return {"fsa_lights_per100g": {name: _fsa_light(name, per_100g[name])
                                   for name in ("fat", "salt", "saturates", "sugars")},
            "id": layer1["id"], "ingredients": [{"text": item["name"]} for item in dish],
            "instructions": layer1["instructions"], "nutr_per_ingredient": per_ingredient,
            "nutr_values_per100g": per_100g, "partition": layer1["partition"],
            "quantity": [{"text": f"{item['grams']:g}"} for item in dish], "title": layer1["title"],
            "unit": [{"text": "g"} for _ in dish], "url": layer1["url"],
            "weight_per_ingr": [item["grams"] for item in dish]}


# The UK Food Standards Agency's per-100 g thresholds (green up to the first, red above the second).
_FSA_THRESHOLDS: dict[str, tuple[float, float]] = {"fat": (3.0, 17.5), "salt": (0.3, 1.5), "saturates": (1.5, 5.0),
                                                   "sugars": (5.0, 22.5)}


def _fsa_light(name: str, per_100g: float) -> str:
    low, high = _FSA_THRESHOLDS[name]
    return "green" if per_100g <= low else "orange" if per_100g <= high else "red"
