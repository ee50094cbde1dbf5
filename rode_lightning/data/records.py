"""The in-memory form of one annotated dish, shared by every dataset reader.

Uni-Food and Nutrition5k describe the same things (an image, what is on the plate and how much, what it is worth in
nutrients), so both readers produce :class:`FoodRecord` and everything downstream (prompts, metrics, baselines)
depends only on this type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rode_lightning.conventions import NUTRITION_FIELDS
from rode_lightning.data.conversation import Turn


@runtime_checkable
class ImageSource(Protocol):
    """An image that is not a file of its own; must pickle (records travel to data-loader workers)."""

    def open(self):  # -> PIL.Image.Image
        ...


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
    """One dish. Fields a dataset does not provide are ``None`` (or empty) and the matching tasks are not built.

    ``image`` is an absolute path, or for images stored inside a dataset (a Hugging Face dataset's image column) a
    picklable reference with an ``open()`` method (:func:`rode_lightning.data.images.open_image` reads both).
    ``nutrition`` holds the fields the dataset gives, a subset of :data:`NUTRITION_FIELDS` (Recipe1M+ has no
    carbohydrate): a field it lacks is absent, never 0, so it is neither taught nor scored.
    ``conversations`` maps a task to a ``(question, answer)`` written by the dataset itself (a Hugging Face dataset
    with question and answer columns): that task is asked and answered with these texts instead of the templates of
    :mod:`rode_lightning.data.prompts`, and scored against the answer text.
    ``turns`` is a whole conversation about the image as the dataset wrote it (conversation JSON, LLaVA-Instruct
    style: user first, then alternating, the assistant last), trained on every answer; it is one sample, for the task
    ``turns_task`` names when its last answer answers a food task in that task's format, else for the free-text task
    (:data:`~rode_lightning.conventions.CONVERSATION_TASK`), scored on the last answer.
    """

    id: str
    image: str | ImageSource
    dataset: str
    category: str | None = None
    ingredients: tuple[Ingredient, ...] = ()
    recipe: tuple[str, ...] = ()
    nutrition: dict[str, float] | None = field(default=None, hash=False)
    conversations: dict[str, tuple[str, str]] = field(default_factory=dict, hash=False)
    turns: tuple[Turn, ...] = ()
    turns_task: str | None = None

    @property
    def ingredient_names(self) -> list[str]:
        return [ingredient.name for ingredient in self.ingredients]
