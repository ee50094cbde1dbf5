"""The demo copy of conversation JSON: multi-turn conversations about synthetic plates (``data/dishes.py``), in the
LLaVA-Instruct layout (``<root>/<split>.json``, images beside it under ``images/``).

Each plate gets one conversation of a few kinds, so the copy has what real conversation data has: several turns,
``<image>`` in the first human turn, some conversations whose last answer is a food task in its documented format
(tagged with ``task``, scored as that task) and some free text (scored as free text). There is no ``val.json``: the
reader holds val out of train, as for one's own data. Everything comes from one seeded ``numpy`` generator and JSON
is written with fixed formatting, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rode_lightning.conventions import IMAGE_PLACEHOLDER
from rode_lightning.data.demo_cache import DemoCopy, check_sizes
from rode_lightning.data.dishes import draw_dish, nutrition_of, recipe_of, sample_dish
from rode_lightning.data.prompts import format_nutrition
from rode_lightning.progress import progress

DEFAULT_SIZES: dict[str, int] = {"train": 96, "test": 24}
SPLITS: tuple[str, ...] = ("train", "val", "test")
_MARKER = ".demo_conversations"
_LAYOUT = ("images", *(f"{split}.json" for split in SPLITS))
_MEAT = frozenset({"chicken", "beef", "salmon"})


def _listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _dialogue(kind: int, category: str, ingredients: list[dict]) -> tuple[list[tuple[str, str]], str | None]:
    """``(question, answer)`` pairs about one plate and the task its last answer answers (``None``: free text)."""
    names = [item["name"] for item in ingredients]
    if kind == 0:
        return [("What dish is this?", category), ("What is in it?", ", ".join(names))], "ingredients"
    if kind == 1:
        steps = recipe_of(category, ingredients)
        return [("What is on this plate?", f"A {category} with {_listing(names)}."),
                ("How do I make it?", " ".join(f"{n}. {step}" for n, step in enumerate(steps, start=1)))], "recipe"
    if kind == 2:
        return [("Describe the plate.", f"It holds {_listing(names)}."),
                ("Name the dish.", category),
                ("Estimate its nutrition.", format_nutrition(nutrition_of(ingredients)))], "nutrition"
    heaviest = ingredients[0]
    meat = [name for name in names if name in _MEAT]
    return [("What dish is this?", f"This is {category}."),
            ("Which ingredient is there most of?", f"The {heaviest['name']}, about {heaviest['grams']:.0f} g."),
            ("Is it vegetarian?", f"No, it has {_listing(meat)}." if meat else "Yes, it has no meat or fish.")], None


def generate_demo_conversations(root: str | Path, seed: int = 0, sizes: dict[str, int] | None = None,
                                image_size: int = 96) -> Path:
    """Write the demo into ``root`` and return it (``sizes``: conversations per split, :data:`DEFAULT_SIZES` by
    default). Nothing is written when the copy of these arguments is there; a folder holding ``images/`` or split
    files but no marker is refused, never wiped (:mod:`~rode_lightning.data.demo_cache`)."""
    root = Path(root)
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    check_sizes(sizes, SPLITS, minimum=1)
    copy = DemoCopy(root, _MARKER, {"seed": seed, "sizes": sizes, "image_size": image_size, "version": 1},
                    _LAYOUT, "conversation JSON")
    return copy.ensure(lambda: _write_copy(root, seed, sizes, image_size))


def _write_copy(root: Path, seed: int, sizes: dict[str, int], image_size: int) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in sizes.items():
        records = []
        for index in progress(range(count), f"generating demo conversations {split}", "dish"):
            category, ingredients = sample_dish(rng)
            image = f"images/{split}_{index:05d}.png"
            draw_dish(ingredients, rng, image_size).save(root / image)
            pairs, task = _dialogue(int(rng.integers(4)), category, ingredients)
            turns = []
            for number, (question, answer) in enumerate(pairs):
                turns.append({"from": "human", "value": (f"{IMAGE_PLACEHOLDER}\n" if number == 0 else "") + question})
                turns.append({"from": "gpt", "value": answer})
            records.append({"id": f"demo-{split}-{index:05d}", "image": image, "conversations": turns,
                            **({"task": task} if task else {})})
        (root / f"{split}.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
