"""Nutrition estimation quality as percentage mean absolute error (pMAE), per field and on average.

pMAE is Nutrition5k's metric, which the RoDE paper reports (Tables 2 and 3): for each field,
``100 * mean |prediction - truth| / mean truth`` over the evaluation set, so a field's error is relative to that
field's typical size and fields in grams and kcal can be averaged. Because both means run over the same samples it
equals ``100 * sum |error| / sum truth``; the metric keeps exactly those sums per field, with the number of samples
that have the field's truth, which makes the reduction across DDP processes a plain sum and the result independent
of how samples were sharded.

Missing predictions. A model may leave a field out or write something unparseable. Such a field counts as a
prediction of **0**, so its absolute error is the whole true value: a miss costs as much as the worst honest
underestimate, and leaving out a field can never score better than guessing it. How often that happened is reported
separately as ``missing_rate`` (missing predicted fields / predicted fields whose target is present), so a bad pMAE
can be told apart from a format problem.

Absent targets. Datasets need not give all five fields (Recipe1M+ has no carbohydrate), so a target may hold a
subset: a field is absent from a target mapping without that key (or with ``None``), or from a target text that does
not mention it. An absent field is not scored for that sample: it adds neither error nor truth, and the prediction
for it counts neither as given nor as missing. Each field's pMAE therefore averages over the samples that have its
truth; a field no target has is left out of the result, and ``average`` is the mean over the fields that are
reported (the paper's "Avg." when all five are). A target with no field at all, or with a value that is present but
not a finite number, is a data bug and raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torchmetrics import Metric

from rode_lightning.conventions import NUTRITION_FIELDS
from rode_lightning.metrics.parsing import parse_nutrition


class NutritionPMAE(Metric):
    """pMAE of the dish-level nutrition fields; see the module docstring for the definition and for missing and
    absent values.

    ``update(predictions, targets)`` takes answers as text (read with :func:`parse_nutrition`) or as mappings from
    field name to value, and targets likewise. ``compute()`` gives ``{field: pMAE}`` for each field of
    :data:`NUTRITION_FIELDS` that some target has, ``average`` (the mean of those) and ``missing_rate``; with no
    samples (or no truth at all) ``average`` and ``missing_rate`` are 0 and no field is reported.
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        fields = len(NUTRITION_FIELDS)
        self.add_state("absolute_error", default=torch.zeros(fields, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("truth", default=torch.zeros(fields, dtype=torch.float64), dist_reduce_fx="sum")
        # Samples whose target has the field: which fields are reported, and the denominator of missing_rate.
        self.add_state("with_truth", default=torch.zeros(fields, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("missing", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predictions: Iterable[str | Mapping[str, float | None]],
               targets: Iterable[str | Mapping[str, float]]) -> None:
        error = [0.0] * len(NUTRITION_FIELDS)
        truth = [0.0] * len(NUTRITION_FIELDS)
        with_truth = [0] * len(NUTRITION_FIELDS)
        missing = 0
        for prediction, target in zip(predictions, targets, strict=True):
            predicted, true = _predicted_values(prediction), _true_values(target)
            for index, field in enumerate(NUTRITION_FIELDS):
                if true[field] is None:
                    continue  # absent from the target: not scored
                value = predicted[field]
                if value is None:
                    missing += 1
                    value = 0.0  # the documented miss: a prediction of 0
                error[index] += abs(value - true[field])
                truth[index] += true[field]
                with_truth[index] += 1
        # One tensor addition per batch rather than per value: the states may live on the GPU.
        device = self.absolute_error.device
        self.absolute_error += torch.tensor(error, dtype=torch.float64, device=device)
        self.truth += torch.tensor(truth, dtype=torch.float64, device=device)
        self.with_truth += torch.tensor(with_truth, dtype=torch.float64, device=device)
        self.missing += missing

    def compute(self) -> dict[str, torch.Tensor]:
        safe_truth = torch.where(self.truth > 0, self.truth, torch.ones_like(self.truth))
        pmae = torch.where(self.truth > 0, 100.0 * self.absolute_error / safe_truth, torch.zeros_like(self.truth))
        reported = self.with_truth > 0
        result = {field: pmae[index].float() for index, field in enumerate(NUTRITION_FIELDS) if reported[index]}
        result["average"] = pmae[reported].mean().float() if bool(reported.any()) else torch.zeros(())
        predicted_fields = self.with_truth.sum()
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


def _true_values(target: str | Mapping[str, float]) -> dict[str, float | None]:
    """Ground truth as field -> value, None for a field the target does not give (not scored). A target that gives
    no field, or a present value that is no finite number, is a data bug: scoring around it would hide it."""
    if isinstance(target, str):
        values = parse_nutrition(target)
    elif isinstance(target, Mapping):
        values = {}
        for field in NUTRITION_FIELDS:
            raw = target.get(field)
            values[field] = None if raw is None else _finite(raw)
            if raw is not None and values[field] is None:
                raise ValueError(f"nutrition target has a {field} that is not a finite number: {target!r}")
    else:
        raise ValueError(f"nutrition target is neither text nor a mapping: {target!r}")
    if all(value is None for value in values.values()):
        raise ValueError(f"nutrition target gives none of {', '.join(NUTRITION_FIELDS)}: {target!r}")
    return values


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def train_mean_baseline(train: list[Mapping[str, float]], evaluation: list[Mapping[str, float]]) -> dict[str, float]:
    """pMAE of answering every dish with the training mean of each field: the floor a nutrition estimate from the
    image has to beat (the Nutrition5k paper reports the same baseline).

    Each field's mean runs over the training records that have it; a field no training record has is not guessed
    (a miss wherever the evaluation records have it)."""
    mean = {}
    for field in NUTRITION_FIELDS:
        values = [value for record in train if (value := _finite(record.get(field))) is not None]
        if values:
            mean[field] = sum(values) / len(values)
    metric = NutritionPMAE()
    metric.update([mean] * len(evaluation), evaluation)
    return {key: float(value) for key, value in metric.compute().items()}
