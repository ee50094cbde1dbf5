"""The label-only floors of an evaluation split: what a model scores that never looks at the image.

A results table is read against these: an ingredient IoU at the most-frequent-ingredients baseline, or a pMAE at
the training mean, says the adapter learned the label statistics and not the dishes. The data side hands over the
labels of one dataset's training and held-out records; which baselines exist and what they are called is decided
here, beside the metrics they are measured with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rode_lightning.metrics.ingredients import most_frequent_baseline
from rode_lightning.metrics.nutrition import train_mean_baseline


@dataclass
class LabelFloors:
    """``floors``: the figures results tables print beside a model's (``ingredient_iou_most_frequent``,
    ``pmae_average_train_mean``); the two baselines in full, where the labels allow them."""

    floors: dict[str, float] = field(default_factory=dict)
    ingredients: dict[str, float] | None = None
    nutrition: dict[str, float] | None = None


def label_floors(train_ingredients: list[list[str]], held_ingredients: list[list[str]],
                 train_nutrition: list[Mapping[str, float]], held_nutrition: list[Mapping[str, float]]
                 ) -> LabelFloors:
    """The floors of one dataset's held-out split from its training labels; a task whose labels either side lacks
    gets none."""
    result = LabelFloors()
    if train_ingredients and held_ingredients:
        result.ingredients = most_frequent_baseline(train_ingredients, held_ingredients)
        result.floors["ingredient_iou_most_frequent"] = result.ingredients["dataset_iou"]
    if train_nutrition and held_nutrition:
        result.nutrition = train_mean_baseline(train_nutrition, held_nutrition)
        result.floors["pmae_average_train_mean"] = result.nutrition["average"]
    return result
