"""A small synthetic Hugging Face dataset, written with ``DatasetDict.save_to_disk``, for the demo and the tests.

It exists so that the Hugging Face reader (:mod:`rode_lightning.data.datasets.huggingface.reader`) runs on every
machine without a download. The plates, ingredients and nutrition are those of the Uni-Food demo (:mod:`demo`); only
the storage follows a typical Hub dataset, with column names of its own that :data:`DEMO_SOURCE` maps:

* ``image``: an ``Image`` feature holding PNG bytes (the images live inside the arrow files, not beside them);
* ``dish``: a ``ClassLabel`` of the demo categories, stored as integers;
* ``ingredients``: a list of names, heaviest first, without grams;
* ``grams``, ``kcal``, ``fat``, ``carbs``, ``protein``: dish nutrition;
* ``question`` and ``answer``: a recipe question and its numbered steps, the dataset's own instruction texts, read
  as ``conversations`` for the recipe task;
* splits ``train``, ``validation`` and ``test``, the Hub's names.

Everything comes from one seeded ``numpy`` generator: the same arguments give the same rows and images.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from rode_lightning.data.dishes import CATEGORIES, draw_dish, nutrition_of, recipe_of, sample_dish
from rode_lightning.data.datasets.huggingface.reader import HuggingFaceSource
from rode_lightning.data.datasets.huggingface.files import datasets_progress
from rode_lightning.data.demo_cache import DemoCopy, check_sizes
from rode_lightning.progress import progress

DEFAULT_SIZES: dict[str, int] = {"train": 64, "validation": 16, "test": 16}
RECIPE_QUESTIONS: tuple[str, ...] = ("How is this dish made?", "What are the steps to cook this?")

DEMO_SOURCE = HuggingFaceSource(
    path="",  # where the demo was generated: see demo_source()
    name="demo_huggingface",
    image="image",
    category="dish",
    ingredients="ingredients",
    nutrition={"mass_g": "grams", "energy_kcal": "kcal", "fat_g": "fat", "carbohydrate_g": "carbs",
               "protein_g": "protein"},
    conversations={"recipe": {"question": "question", "answer": "answer"}},
)
"""The column mapping of the demo dataset; the YAML form is the same keys under ``data.huggingface``."""

_MARKER = ".demo_huggingface"
_SAVED = ("dataset_dict.json", "state.json")  # a saved DatasetDict, or a saved Dataset: a folder that is not ours
_NUTRITION_COLUMNS: dict[str, str] = {column: name for name, column in DEMO_SOURCE.nutrition.items()}


def demo_source(root: str | Path) -> HuggingFaceSource:
    """:data:`DEMO_SOURCE` reading the demo generated into ``root``."""
    return replace(DEMO_SOURCE, path=str(root))


def generate_demo_huggingface(root: str | Path, seed: int = 0, sizes: dict[str, int] | None = None,
                              image_size: int = 96) -> Path:
    """Write the demo dataset into ``root`` (a ``DatasetDict`` folder) and return ``root``.

    ``sizes`` gives the rows per split (the dataset's split names, :data:`DEFAULT_SIZES` by default). Generation is
    skipped when the marker file records the same arguments, so it runs once per cache; with other arguments the
    previous demo is replaced. A folder that holds a saved dataset but no marker is never deleted: that is an error.
    """
    root = Path(root)
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    check_sizes(sizes, minimum=1)
    copy = DemoCopy(root, _MARKER, {"seed": seed, "sizes": sizes, "image_size": image_size, "version": 1},
                    _SAVED, "Hugging Face", written=_written_by_save)
    return copy.ensure(lambda: _write_copy(root, seed, sizes, image_size))


def _write_copy(root: Path, seed: int, sizes: dict[str, int], image_size: int) -> None:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, List, Value
    features = Features({
        "image": Image(),
        "dish": ClassLabel(names=list(CATEGORIES)),
        "ingredients": List(Value("string")),
        # float64: the values are rounded to 0.1 and must read back as written (float32 would not).
        **{column: Value("float64") for column in _NUTRITION_COLUMNS},
        "question": Value("string"),
        "answer": Value("string"),
    })
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in sizes.items():
        columns: dict[str, list] = {name: [] for name in features}
        for _ in progress(range(count), f"generating demo Hugging Face {split}", "dish"):
            category, ingredients = sample_dish(rng)
            buffer = io.BytesIO()
            draw_dish(ingredients, rng, image_size).save(buffer, format="PNG")
            columns["image"].append({"bytes": buffer.getvalue(), "path": None})
            columns["dish"].append(category)
            columns["ingredients"].append([item["name"] for item in ingredients])
            nutrition = nutrition_of(ingredients)
            for column, name in _NUTRITION_COLUMNS.items():
                columns[column].append(nutrition[name])
            columns["question"].append(RECIPE_QUESTIONS[int(rng.integers(len(RECIPE_QUESTIONS)))])
            steps = recipe_of(category, ingredients)
            columns["answer"].append(" ".join(f"{number}. {step}" for number, step in enumerate(steps, start=1)))
        splits[split] = Dataset.from_dict(columns, features=features)
    with datasets_progress():  # the demo has its own bar; "Saving the dataset" ones would fill logs
        DatasetDict(splits).save_to_disk(str(root))


def _written_by_save(root: Path) -> list[str]:
    """What a previous demo's ``save_to_disk`` wrote: its index and the split folders the index lists."""
    index = root / "dataset_dict.json"
    if not index.is_file():
        return []
    splits = json.loads(index.read_text()).get("splits", [])
    return [*(split for split in splits if isinstance(split, str) and split and Path(split).name == split
              and split not in (".", "..")), index.name]
