"""Every metric of every (dataset, task) pair, and the flat names they are logged under.

The set of pairs is fixed up front rather than grown as samples arrive: under DDP every process must hold the same
metrics and gather them together, even a process whose shard of the evaluation set held no sample of some pair.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from torch import nn
from torchmetrics import Metric

from rode_lightning.conventions import CONVERSATION_TASK

from rode_lightning.metrics.category import CategoryAccuracy
from rode_lightning.metrics.ingredients import IngredientIoU
from rode_lightning.metrics.nutrition import NutritionPMAE
from rode_lightning.metrics.recipe import RecipeScores

TASK_METRICS: dict[str, type[Metric]] = {
    "category": CategoryAccuracy,
    "ingredients": IngredientIoU,
    "recipe": RecipeScores,
    "nutrition": NutritionPMAE,
    # Free text: the raw text (recipe normalisation drops numbers, which a free answer may need).
    CONVERSATION_TASK: functools.partial(RecipeScores, normalize=False),
}

DATASET_TASKS: dict[str, tuple[str, ...]] = {
    "unifood": ("category", "ingredients", "recipe", "nutrition"),
    "nutrition5k": ("ingredients", "nutrition"),
}
"""The tasks each dataset can provide (Nutrition5k has no category or recipe)."""

# Result key of a task's metric -> the logged name. pMAE fields are named as the paper's table columns.
METRIC_NAMES: dict[str, dict[str, str]] = {
    "category": {"accuracy": "category_accuracy"},
    "ingredients": {"dataset_iou": "ingredient_iou", "sample_iou": "ingredient_sample_iou"},
    "recipe": {"sacrebleu": "recipe_sacrebleu", "rouge_l": "recipe_rouge_l"},
    CONVERSATION_TASK: {"sacrebleu": "conversation_sacrebleu", "rouge_l": "conversation_rouge_l"},
    "nutrition": {"mass_g": "pmae_mass", "energy_kcal": "pmae_energy", "fat_g": "pmae_fat",
                  "carbohydrate_g": "pmae_carbohydrate", "protein_g": "pmae_protein", "average": "pmae_average",
                  "missing_rate": "nutrition_missing_rate"},
}


class EvaluationSuite(nn.Module):
    """One metric object per (dataset, task) pair; a ModuleDict, so metrics move with the LightningModule."""

    def __init__(self, dataset_tasks: dict[str, Iterable[str]] = DATASET_TASKS):
        super().__init__()
        self.pairs = [(dataset, task) for dataset, tasks in dataset_tasks.items() for task in tasks]
        self.metrics = nn.ModuleDict({self._key(dataset, task): TASK_METRICS[task]()
                                      for dataset, task in self.pairs})

    @staticmethod
    def _key(dataset: str, task: str) -> str:
        return f"{dataset}__{task}"  # ModuleDict keys may not contain dots

    def has(self, dataset: str, task: str) -> bool:
        return self._key(dataset, task) in self.metrics

    def metric(self, dataset: str, task: str) -> Metric:
        if not self.has(dataset, task):
            raise KeyError(f"no metric for task {task!r} of dataset {dataset!r}; known pairs: {self.pairs}")
        return self.metrics[self._key(dataset, task)]

    def update(self, dataset: str, task: str, predictions: list[str], references: list[str]) -> None:
        self.metric(dataset, task).update(predictions, references)

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()


def flatten_result(task: str, result: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A task metric's ``compute()`` output under its logged names (e.g. ``dataset_iou`` -> ``ingredient_iou``)."""
    if not isinstance(result, dict):
        result = {"accuracy": result}
    names = METRIC_NAMES[task]
    return {names[key]: value for key, value in result.items() if key in names}
