"""A small synthetic Food-101, written in the release's own layout, for the demo and the tests.

It exists so that the Food-101 reader runs on every machine, not only where the 5 GB release is downloaded. The
plates are those of the Uni-Food demo (:mod:`demo`), so a model sees the same visual language in every dataset;
only the files follow Food-101:

* ``meta/classes.txt``: the demo categories as Food-101 class names (``fried_rice``), alphabetical like the
  release's, every category listed even when a small split draws none of its dishes; ``meta/labels.txt``: their
  display names (``Fried rice``), so the reader serves the demo's own category texts;
* ``images/<class>/<image id>.jpg``, JPEG at quality 95 like the release's photos, image ids numbers unique over
  the copy;
* ``meta/train.txt`` and ``meta/test.txt`` grouped by class in ``classes.txt`` order, and the same lists as
  ``meta/train.json`` and ``meta/test.json`` (every class a key, as in the release).

Everything comes from one seeded ``numpy`` generator: the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rode_lightning.data.dishes import CATEGORIES, draw_dish, sample_dish
from rode_lightning.data.datasets.food101.reader import CLASSES_FILE, LABELS_FILE, SPLIT_LISTS, image_path
from rode_lightning.data.demo_cache import DemoCopy, check_sizes
from rode_lightning.progress import progress

DEFAULT_SIZES: dict[str, int] = {"train": 96, "test": 24}
JPEG_QUALITY = 95
_FIRST_IMAGE_ID = 1000000  # seven digits, like most of the release's ids
_MARKER = ".demo_food101"
_LAYOUT_DIRS = ("images", "meta")


def class_name(category: str) -> str:
    """The Food-101 class name of a demo category: ``fried rice`` -> ``fried_rice``."""
    return category.replace(" ", "_")


def generate_demo_food101(root: str | Path, seed: int = 0, sizes: dict[str, int] | None = None,
                          image_size: int = 96) -> Path:
    """Write a demo Food-101 under ``root`` and return ``root``.

    ``sizes`` gives the images per released split (``train``, ``test``). Generation is skipped when the marker file
    records the same arguments, so it runs once per cache; with other arguments the previous demo files are
    replaced. A directory that holds the layout but no marker (a real copy of the release, say) is never deleted:
    that is an error.
    """
    root = Path(root)
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    check_sizes(sizes, SPLIT_LISTS)
    copy = DemoCopy(root, _MARKER, {"seed": seed, "sizes": sizes, "image_size": image_size, "version": 1},
                    _LAYOUT_DIRS, "Food-101")
    return copy.ensure(lambda: _write_copy(root, seed, sizes, image_size))


def _write_copy(root: Path, seed: int, sizes: dict[str, int], image_size: int) -> None:
    rng = np.random.default_rng(seed)
    categories = sorted(CATEGORIES, key=class_name)
    number = 0
    for split, count in sizes.items():
        by_class: dict[str, list[str]] = {class_name(category): [] for category in categories}
        for _ in progress(range(count), f"generating demo Food-101 {split}", "image"):
            category, ingredients = sample_dish(rng)
            entry = f"{class_name(category)}/{_FIRST_IMAGE_ID + number}"
            number += 1
            image = image_path(root, entry)
            image.parent.mkdir(parents=True, exist_ok=True)
            draw_dish(ingredients, rng, image_size).save(image, format="JPEG", quality=JPEG_QUALITY)
            by_class[class_name(category)].append(entry)
        text_list, json_list = SPLIT_LISTS[split]
        _write(root / text_list, "".join(f"{entry}\n" for entries in by_class.values() for entry in entries))
        _write(root / json_list, json.dumps(by_class))
    _write(root / CLASSES_FILE, "".join(f"{class_name(category)}\n" for category in categories))
    _write(root / LABELS_FILE, "".join(f"{category.capitalize()}\n" for category in categories))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
