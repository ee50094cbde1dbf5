"""Words about the demo's food world, for pre-training the demo base (``rode_lightning/pretrain``).

A real LLaVA starts from a CLIP trained on captioned photos and a LLaMA trained on web text; it has read about
food long before it is fine-tuned on food tasks. The demo base is built the same way, from two kinds of text:

* **captions** of plates, in words: which items lie on the plate and how large each portion is. CLIP's contrastive
  pre-training and LLaVA's stage 1 (projector alignment) pair them with pictures;
* **generic food text** for the language model: what dishes are usually made of, how each ingredient is prepared,
  what 100 grams of it are worth, and plain arithmetic on weights, written as prose.

None of it is in the fine-tuning tasks' formats: no task questions, no conversation template, no category name as
an answer of its own, no ``mass: 348 g, energy: ...`` lists, no numbered recipe steps
(:func:`rode_lightning.pretrain.leakage.task_format_leaks` checks every line before it is used).
"""

from __future__ import annotations

import numpy as np

from rode_lightning.data.dishes import CATEGORIES, INGREDIENTS, sample_dish

# Portion words by grams: the caption says how large each item is, not how much it weighs.
PORTION_WORDS: tuple[tuple[float, str], ...] = (
    (45, "a little"),
    (85, "a small portion of"),
    (135, "a medium portion of"),
    (195, "a large portion of"),
    (float("inf"), "a very large portion of"),
)

COLOUR_WORDS: dict[str, str] = {
    "rice": "white", "tomato": "red", "lettuce": "light green", "cucumber": "pale green", "egg": "yellow",
    "chicken": "beige", "beef": "dark brown", "salmon": "pink", "pasta": "pale yellow", "broccoli": "dark green",
    "carrot": "orange", "potato": "light brown", "cheese": "golden", "bread": "brown", "onion": "purple",
    "avocado": "olive green",
}


def portion_word(grams: float) -> str:
    for limit, word in PORTION_WORDS:
        if grams <= limit:
            return word
    raise AssertionError("unreachable: the last limit is infinite")


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def caption(ingredients: list[dict]) -> str:
    """``a plate with a large portion of rice, a small portion of egg and a little carrot.``: items heaviest
    first (the order a person notices them), each with the word for its portion size."""
    items = [f"{portion_word(item['grams'])} {item['name']}" for item in ingredients]
    return f"a plate with {_join(items)}."


def food_text(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` short generic texts about the demo's ingredients, dishes and weights, drawn from ``rng``."""
    writers = (_dish_text, _preparation_text, _per_100g_text, _weighed_text, _weights_sum_text, _look_text,
               _caption_text)
    return [writers[rng.integers(len(writers))](rng) for _ in range(count)]


def _ingredient(rng: np.random.Generator) -> str:
    return list(INGREDIENTS)[rng.integers(len(INGREDIENTS))]


def _dish_text(rng: np.random.Generator) -> str:
    name = list(CATEGORIES)[rng.integers(len(CATEGORIES))]
    spec = CATEGORIES[name]
    return (f"A {name} is usually made with {_join(list(spec.core))}; some cooks also add "
            f"{_join(list(spec.optional))}.")


def _preparation_text(rng: np.random.Generator) -> str:
    name = _ingredient(rng)
    return f"In many kitchens people {INGREDIENTS[name].preparation} the {name} before it is served."


def _per_100g_text(rng: np.random.Generator) -> str:
    name = _ingredient(rng)
    spec = INGREDIENTS[name]
    return (f"One hundred grams of {name} give about {spec.kcal:.0f} kilocalories, with {spec.fat:g} grams of fat, "
            f"{spec.carbohydrate:g} grams of carbohydrate and {spec.protein:g} grams of protein.")


def _weighed_text(rng: np.random.Generator) -> str:
    name = _ingredient(rng)
    spec = INGREDIENTS[name]
    grams = int(rng.integers(int(spec.grams[0]), int(spec.grams[1]) + 1))
    return (f"A serving of {grams} grams of {name} has roughly {grams * spec.kcal / 100:.0f} kilocalories and "
            f"{grams * spec.protein / 100:.0f} grams of protein.")


def _weights_sum_text(rng: np.random.Generator) -> str:
    weights = [int(w) for w in rng.integers(20, 260, size=rng.integers(2, 5))]
    return f"Together, {_join([f'{w} grams' for w in weights])} weigh {sum(weights)} grams."


def _look_text(rng: np.random.Generator) -> str:
    name = _ingredient(rng)
    shape = {"circle": "round", "square": "square", "triangle": "triangular", "diamond": "diamond shaped"}
    return f"On a plate, {name} looks {COLOUR_WORDS[name]} and {shape[INGREDIENTS[name].shape]}."


def _caption_text(rng: np.random.Generator) -> str:
    _, ingredients = sample_dish(rng)
    return "Someone photographed " + caption(ingredients)
