"""Category accuracy: the predicted dish name equals the true one after normalisation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torchmetrics import Metric

from rode_lightning.conventions import normalize_ingredient


def normalize_category(text: str) -> str:
    # Same folding as ingredient names (case, punctuation, plurals); a trailing full stop or "This is" is ignored.
    text = text.strip().lower()
    for lead_in in ("this dish is ", "this is ", "the dish is ", "it is "):
        if text.startswith(lead_in):
            text = text[len(lead_in):]
    words = [word for word in normalize_ingredient(text).split() if word not in ("a", "an")]
    return " ".join(words)


class CategoryAccuracy(Metric):
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predictions: Iterable[str], targets: Iterable[str]) -> None:
        for prediction, target in zip(predictions, targets, strict=True):
            self.correct += float(normalize_category(prediction) == normalize_category(target))
            self.total += 1

    def compute(self) -> torch.Tensor:
        return (self.correct / self.total).float() if self.total > 0 else torch.zeros(())
