"""A small synthetic VIREO Food-172, written in the release's own layout, for the demo and the tests.

It exists so that the VIREO Food-172 reader runs on every machine, not only where the release is downloaded. The
plates are those of the Uni-Food demo (:mod:`demo`), so a model sees the same visual language in every dataset;
only the files follow VIREO Food-172:

* ``FoodList.txt``: the demo categories, class k on line k (``CATEGORIES`` order), written as the demo names them
  so that the reader serves the same category texts as the other demo datasets;
* ``IngredientList.txt``: the demo ingredient table (``INGREDIENTS`` order), one name per line;
* ``ready_chinese_food/<class number>/<n>_0.jpg``, JPEG at quality 95 like the release's photos, named like the
  release's (``/1/10_0.jpg``);
* ``TR.txt``, ``VAL.txt`` and ``TE.txt`` listing each split's images as ``/<class number>/<file name>``;
* ``IngreLabel.txt``: one line per image of every split, its path then 1 for each ingredient drawn on the plate and
  -1 for every other one.

Everything comes from one seeded ``numpy`` generator: the same arguments give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rode_lightning.data.dishes import CATEGORIES, INGREDIENTS, draw_dish, sample_dish
from rode_lightning.data.datasets.vireo172.reader import (FOOD_LIST, IMAGE_DIR, INGREDIENT_LIST, LABEL_DIR, LABEL_FILE,
                                                          SPLIT_FILES, image_path)
from rode_lightning.data.demo_cache import DemoCopy, check_sizes
from rode_lightning.progress import progress

DEFAULT_SIZES: dict[str, int] = {"train": 96, "val": 24, "test": 24}
JPEG_QUALITY = 95
_MARKER = ".demo_vireo172"
_LAYOUT_DIRS = (IMAGE_DIR, LABEL_DIR)


def generate_demo_vireo172(root: str | Path, seed: int = 0, sizes: dict[str, int] | None = None,
                           image_size: int = 96) -> Path:
    """Write a demo VIREO Food-172 under ``root`` and return ``root``.

    ``sizes`` gives the images per split (``train``, ``val``, ``test``). Generation is skipped when the marker file
    records the same arguments, so it runs once per cache; with other arguments the previous demo files are
    replaced. A directory that holds the layout but no marker (a real copy of the release, say) is never deleted:
    that is an error.
    """
    root = Path(root)
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    check_sizes(sizes, SPLIT_FILES)
    copy = DemoCopy(root, _MARKER, {"seed": seed, "sizes": sizes, "image_size": image_size, "version": 1},
                    _LAYOUT_DIRS, "VIREO Food-172")
    return copy.ensure(lambda: _write_copy(root, seed, sizes, image_size))


def _write_copy(root: Path, seed: int, sizes: dict[str, int], image_size: int) -> None:
    rng = np.random.default_rng(seed)
    classes = list(CATEGORIES)
    per_class = [0] * len(classes)
    label_lines = []
    for split, count in sizes.items():
        images = []
        for _ in progress(range(count), f"generating demo VIREO Food-172 {split}", "image"):
            category, ingredients = sample_dish(rng)
            number = classes.index(category)
            per_class[number] += 1
            relative = f"/{number + 1}/{per_class[number]}_0.jpg"
            image = image_path(root, relative)
            image.parent.mkdir(parents=True, exist_ok=True)
            draw_dish(ingredients, rng, image_size).save(image, format="JPEG", quality=JPEG_QUALITY)
            images.append(relative)
            drawn = {item["name"] for item in ingredients}
            label_lines.append(" ".join([relative, *("1" if name in drawn else "-1" for name in INGREDIENTS)]))
        _write_lines(root / SPLIT_FILES[split], images)
    _write_lines(root / LABEL_FILE, label_lines)
    _write_lines(root / FOOD_LIST, classes)
    _write_lines(root / INGREDIENT_LIST, list(INGREDIENTS))


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
