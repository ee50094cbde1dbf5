"""The demo copy of Uni-Food: synthetic plates (``data/dishes.py``) in the Uni-Food format, one JSONL per split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rode_lightning.data.demo_cache import DemoCopy, check_sizes
from rode_lightning.data.dishes import draw_dish, nutrition_of, recipe_of, sample_dish
from rode_lightning.progress import progress

DEFAULT_SPLITS: dict[str, int] = {"train": 800, "val": 64, "test": 64}
_MARKER = ".complete"  # the name the first demo caches were written with; kept so that they stay current
_LAYOUT = ("images", "annotations")


def generate_demo_unifood(root: str | Path, seed: int = 0, splits: dict[str, int] | None = None,
                          image_size: int = 96) -> Path:
    """Write a demo Uni-Food dataset under ``root`` and return ``root``.

    Layout (the Uni-Food format documented in README.md)::

        root/images/<split>_<index>.png
        root/annotations/<split>.jsonl      one JSON record per line

    The generation is skipped when ``root/.complete`` records the same parameters, so it runs once per cache; with
    other parameters the previous copy is replaced. A folder that holds ``images/`` or ``annotations/`` but no
    marker (the user's own Uni-Food data, say) is never deleted: that is an error
    (:mod:`~rode_lightning.data.demo_cache`).
    """
    root = Path(root)
    splits = dict(DEFAULT_SPLITS if splits is None else splits)
    check_sizes(splits)
    copy = DemoCopy(root, _MARKER, {"seed": seed, "splits": splits, "image_size": image_size, "version": 1},
                    _LAYOUT, "Uni-Food")
    return copy.ensure(lambda: _write_copy(root, seed, splits, image_size))


def _write_copy(root: Path, seed: int, splits: dict[str, int], image_size: int) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in splits.items():
        lines = []
        for index in progress(range(count), f"generating demo Uni-Food {split}", "dish"):
            category, ingredients = sample_dish(rng)
            image_name = f"images/{split}_{index:05d}.png"
            draw_dish(ingredients, rng, image_size).save(root / image_name)
            record = {
                "id": f"demo-{split}-{index:05d}",
                "image": image_name,
                "category": category,
                "ingredients": ingredients,
                "recipe": recipe_of(category, ingredients),
                "nutrition": nutrition_of(ingredients),
            }
            lines.append(json.dumps(record))
        (root / "annotations" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
