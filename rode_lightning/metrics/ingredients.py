"""Ingredient recognition quality as intersection over union of ingredient sets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import torch
from torchmetrics import Metric

from rode_lightning.conventions import normalize_ingredient
from rode_lightning.metrics.parsing import parse_ingredients
from rode_lightning.metrics.vocabulary import IngredientVocabulary


class IngredientIoU(Metric):
    """IoU between predicted and true ingredient sets, reported two ways.

    * ``dataset_iou`` = ``sum tp / sum (tp + fp + fn)`` over the whole split: InverseCooking's and FoodLMM's
      "IoU", and therefore what the RoDE paper's tables report.
    * ``sample_iou`` = the mean over samples of ``|P & T| / |P | T|`` (a sample with both sets empty scores 1).

    ``update`` takes predictions as free text (parsed with :func:`parse_ingredients`) or as ready collections of
    names; targets likewise. Order and repeats do not matter: both sides are compared as sets. With a
    ``vocabulary`` of clusters, both sides are mapped to cluster names before comparing. States are sums, reduced
    across processes by summation.
    """

    full_state_update = False

    def __init__(self, vocabulary: IngredientVocabulary | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocabulary = vocabulary
        for name in ("true_positives", "false_positives", "false_negatives", "sample_iou_sum", "samples"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predictions: Iterable[str | Iterable[str]], targets: Iterable[str | Iterable[str]]) -> None:
        for prediction, target in zip(predictions, targets, strict=True):
            predicted, true = _as_set(prediction), _as_set(target)
            if self.vocabulary is not None:
                predicted = {self.vocabulary.canonical(name) for name in predicted}
                true = {self.vocabulary.canonical(name) for name in true}
            overlap = len(predicted & true)
            union = len(predicted | true)
            self.true_positives += overlap
            self.false_positives += len(predicted - true)
            self.false_negatives += len(true - predicted)
            self.sample_iou_sum += overlap / union if union else 1.0
            self.samples += 1

    def compute(self) -> dict[str, torch.Tensor]:
        denominator = self.true_positives + self.false_positives + self.false_negatives
        dataset_iou = self.true_positives / denominator if denominator > 0 else torch.zeros((), dtype=torch.float64)
        sample_iou = self.sample_iou_sum / self.samples if self.samples > 0 else torch.zeros((), dtype=torch.float64)
        return {"dataset_iou": dataset_iou.float(), "sample_iou": sample_iou.float()}


def _as_set(value: str | Iterable[str]) -> set[str]:
    if isinstance(value, str):
        return set(parse_ingredients(value))
    return {normalize_ingredient(name) for name in value if normalize_ingredient(name)}


def most_frequent_baseline(train_sets: list[list[str]], eval_sets: list[list[str]]) -> dict[str, float]:
    """IoU of always answering the k most frequent training ingredients (k = mean training set size, rounded).

    This is the floor a model must clearly beat to show that it reads the image rather than the label statistics.
    """
    counts = Counter(normalize_ingredient(name) for names in train_sets for name in names)
    k = max(1, round(sum(len(names) for names in train_sets) / max(1, len(train_sets))))
    guess = [name for name, _ in counts.most_common(k)]
    metric = IngredientIoU()
    metric.update([guess] * len(eval_sets), eval_sets)
    return {key: float(value) for key, value in metric.compute().items()}
