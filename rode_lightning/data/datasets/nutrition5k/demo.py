"""A small synthetic Nutrition5k, written in the release's own layout, for the demo and the tests.

It exists so that the Nutrition5k reader runs on every machine, not only where the 180 GB release is downloaded.
The plates, the ingredient table and the per-100 g nutrition are those of the Uni-Food demo (:mod:`demo`), so a
model sees the same visual language in both datasets; only the files follow Nutrition5k:

* two metadata CSVs without a header, ``dish_id, total_calories, total_mass, total_fat, total_carb, total_protein``
  then seven fields per ingredient, values with six decimals like the release, dish totals the sums of ingredients;
* dish ids ``dish_0000000001``..., ingredient ids ``ingr_<10 digits>`` (the ingredient's place in the table);
* split files ``rgb_train_ids.txt`` and ``rgb_test_ids.txt``;
* ``imagery/realsense_overhead/<dish_id>/rgb.png`` for every dish but ``missing_overhead`` per split, which, as in
  the release, have metadata and a split entry but no overhead image, so the reader's skip path always runs.

Everything comes from one seeded ``numpy`` generator: the same arguments give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rode_lightning.data.dishes import INGREDIENTS, draw_dish, sample_dish
from rode_lightning.data.datasets.nutrition5k.reader import METADATA_FILES, SPLIT_FILES, overhead_image
from rode_lightning.data.demo_cache import DemoCopy, check_sizes
from rode_lightning.progress import progress

DEFAULT_SIZES: dict[str, int] = {"train": 64, "test": 16}
_INGREDIENT_IDS: dict[str, str] = {name: f"ingr_{index:010d}" for index, name in enumerate(INGREDIENTS, start=1)}
_MARKER = ".demo_nutrition5k"
_LAYOUT_DIRS = ("metadata", "dish_ids", "imagery")


def generate_demo_nutrition5k(root: str | Path, seed: int = 0, sizes: dict[str, int] | None = None,
                              image_size: int = 96, missing_overhead: int = 1) -> Path:
    """Write a demo Nutrition5k under ``root`` and return ``root``.

    ``sizes`` gives, per split (``train``, ``test``), the dishes that have an overhead image; each split also lists
    ``missing_overhead`` dishes that have none. Generation is skipped when the marker file records the same
    arguments, so it runs once per cache; with other arguments the previous demo files are replaced. A directory
    that holds the layout but no marker (a real copy of the release, say) is never deleted: that is an error.
    """
    root = Path(root)
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    check_sizes(sizes, SPLIT_FILES, missing_overhead=missing_overhead)
    copy = DemoCopy(root, _MARKER, {"seed": seed, "sizes": sizes, "image_size": image_size,
                                    "missing_overhead": missing_overhead, "version": 1}, _LAYOUT_DIRS, "Nutrition5k")
    return copy.ensure(lambda: _write_copy(root, seed, sizes, image_size, missing_overhead))


def _write_copy(root: Path, seed: int, sizes: dict[str, int], image_size: int, missing_overhead: int) -> None:
    rng = np.random.default_rng(seed)
    rows: dict[str, list[str]] = {relative: [] for relative in METADATA_FILES}
    number = 0
    for split, count in sizes.items():
        listed = count + missing_overhead
        without_image = set(rng.choice(listed, size=min(missing_overhead, listed), replace=False).tolist())
        ids = []
        for index in progress(range(listed), f"generating demo Nutrition5k {split}", "dish"):
            number += 1
            dish_id = f"dish_{number:010d}"
            ids.append(dish_id)
            _, ingredients = sample_dish(rng)
            # Most dishes come from the first cafeteria, as in the release.
            rows[METADATA_FILES[0] if rng.random() < 0.75 else METADATA_FILES[1]].append(
                _metadata_row(dish_id, ingredients))
            if index not in without_image:
                image = overhead_image(root, dish_id)
                image.parent.mkdir(parents=True, exist_ok=True)
                draw_dish(ingredients, rng, image_size).save(image)
        split_path = root / SPLIT_FILES[split]
        split_path.parent.mkdir(parents=True, exist_ok=True)
        split_path.write_text("".join(f"{dish_id}\n" for dish_id in ids))
    for relative, lines in rows.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("".join(f"{line}\n" for line in lines))


def _metadata_row(dish_id: str, ingredients: list[dict]) -> str:
    """One CSV row in the release's field order (calories before mass), totals summed from the ingredients."""
    totals = [0.0] * 5  # calories, mass, fat, carb, protein: the dish columns' order
    fields = []
    for item in ingredients:
        spec, grams = INGREDIENTS[item["name"]], item["grams"]
        kcal, fat, carbohydrate, protein = (grams * per_100g / 100 for per_100g in
                                            (spec.kcal, spec.fat, spec.carbohydrate, spec.protein))
        totals = [total + value for total, value in zip(totals, (kcal, grams, fat, carbohydrate, protein))]
        # Ingredient columns: ingr_id, ingr_name, then grams before calories (unlike the dish columns).
        fields += [_INGREDIENT_IDS[item["name"]], item["name"],
                   *(f"{value:.6f}" for value in (grams, kcal, fat, carbohydrate, protein))]
    return ",".join([dish_id, *(f"{value:.6f}" for value in totals), *fields])
