"""Nutrition estimation quality as percentage mean absolute error (pMAE), per field and on average.

pMAE is Nutrition5k's metric, which the RoDE paper reports (Tables 2 and 3): for each field,
``100 * mean |prediction - truth| / mean truth`` over the evaluation set, so a field's error is relative to that
field's typical size and fields in grams and kcal can be averaged. Because both means run over the same samples it
equals ``100 * sum |error| / sum truth``; the metric keeps exactly those two sums per field, which makes the reduction
across DDP processes a plain sum and the result independent of how samples were sharded.

Missing values. A model may leave a field out or write something unparseable. Such a field counts as a prediction
of **0**, so its absolute error is the whole true value: a miss costs as much as the worst honest underestimate, and
leaving out a field can never score better than guessing it. How often that happened is reported separately as
``missing_rate`` (missing predicted fields / all predicted fields), so a bad pMAE can be told apart from a format
problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torchmetrics import Metric

from rode_lightning.data.records import NUTRITION_FIELDS
from rode_lightning.metrics.parsing import parse_nutrition


class NutritionPMAE(Metric):
    """pMAE of the five dish-level nutrition fields; see the module docstring for the definition and missing values.

    ``update(predictions, targets)`` takes answers as text (read with :func:`parse_nutrition`) or as mappings from
    field name to value. ``compute()`` gives ``{field: pMAE for field in NUTRITION_FIELDS}``, ``average`` (the mean of
    the five, the paper's "Avg.") and ``missing_rate``; with no samples every entry is 0.
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        fields = len(NUTRITION_FIELDS)
        self.add_state("absolute_error", default=torch.zeros(fields, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("truth", default=torch.zeros(fields, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("missing", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("samples", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predictions: Iterable[str | Mapping[str, float | None]],
               targets: Iterable[str | Mapping[str, float]]) -> None:
        error = [0.0] * len(NUTRITION_FIELDS)
        truth = [0.0] * len(NUTRITION_FIELDS)
        missing = samples = 0
        for prediction, target in zip(predictions, targets, strict=True):
            predicted, true = _predicted_values(prediction), _true_values(target)
            for index, field in enumerate(NUTRITION_FIELDS):
                value = predicted[field]
                if value is None:
                    missing += 1
                    value = 0.0  # the documented miss: a prediction of 0
                error[index] += abs(value - true[field])
                truth[index] += true[field]
            samples += 1
        # One tensor addition per batch rather than per value: the states may live on the GPU.
        self.absolute_error += torch.tensor(error, dtype=torch.float64, device=self.absolute_error.device)
        self.truth += torch.tensor(truth, dtype=torch.float64, device=self.truth.device)
        self.missing += missing
        self.samples += samples

    def compute(self) -> dict[str, torch.Tensor]:
        safe_truth = torch.where(self.truth > 0, self.truth, torch.ones_like(self.truth))
        pmae = torch.where(self.truth > 0, 100.0 * self.absolute_error / safe_truth, torch.zeros_like(self.truth))
        result = {field: pmae[index].float() for index, field in enumerate(NUTRITION_FIELDS)}
        result["average"] = pmae.mean().float()
        predicted_fields = self.samples * len(NUTRITION_FIELDS)
        missing_rate = self.missing / predicted_fields if predicted_fields > 0 else torch.zeros_like(self.missing)
        result["missing_rate"] = missing_rate.float()
        return result


def _predicted_values(prediction: str | Mapping[str, float | None] | None) -> dict[str, float | None]:
    """Whatever a model produced, as field -> finite float or None; never raises (a bad answer is a miss)."""
    if isinstance(prediction, str):
        return parse_nutrition(prediction)
    values: dict[str, float | None] = dict.fromkeys(NUTRITION_FIELDS)
    if isinstance(prediction, Mapping):
        for field in NUTRITION_FIELDS:
            values[field] = _finite(prediction.get(field))
    return values


def _true_values(target: str | Mapping[str, float]) -> dict[str, float]:
    """Ground truth must be complete: a missing true value is a data bug, and silently skipping it would change
    which samples a field's pMAE averages over."""
    values = parse_nutrition(target) if isinstance(target, str) else {
        field: _finite(target.get(field)) for field in NUTRITION_FIELDS}
    absent = [field for field, value in values.items() if value is None]
    if absent:
        raise ValueError(f"nutrition target lacks {', '.join(absent)}: {target!r}")
    return values


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def train_mean_baseline(train: list[Mapping[str, float]], evaluation: list[Mapping[str, float]]) -> dict[str, float]:
    """pMAE of answering every dish with the training mean of each field: the floor a nutrition estimate from the
    image has to beat (the Nutrition5k paper reports the same baseline)."""
    mean = {field: sum(values[field] for values in train) / len(train) for field in NUTRITION_FIELDS}
    metric = NutritionPMAE()
    metric.update([mean] * len(evaluation), evaluation)
    return {key: float(value) for key, value in metric.compute().items()}
