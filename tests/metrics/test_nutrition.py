from __future__ import annotations

import re
import warnings

import pytest

from rode_lightning.conventions import NUTRITION_FIELDS
from rode_lightning.data.prompts import format_nutrition
from rode_lightning.metrics.nutrition import NutritionPMAE
from rode_lightning.metrics.parsing import parse_nutrition

TRUE = [
    {"mass_g": 300.0, "energy_kcal": 450.0, "fat_g": 12.0, "carbohydrate_g": 55.0, "protein_g": 20.0},
    {"mass_g": 150.0, "energy_kcal": 200.0, "fat_g": 8.0, "carbohydrate_g": 15.0, "protein_g": 10.0},
    {"mass_g": 450.0, "energy_kcal": 700.0, "fat_g": 30.0, "carbohydrate_g": 70.0, "protein_g": 35.0},
]
PREDICTED = [
    {"mass_g": 330.0, "energy_kcal": 400.0, "fat_g": 15.0, "carbohydrate_g": 50.0, "protein_g": 25.0},
    {"mass_g": 100.0, "energy_kcal": 260.0, "fat_g": 8.0, "carbohydrate_g": 20.0, "protein_g": 5.0},
    {"mass_g": 500.0, "energy_kcal": 650.0, "fat_g": 20.0, "carbohydrate_g": 90.0, "protein_g": 30.0},
]


def reference_pmae(predicted: list[dict], true: list[dict]) -> dict[str, float]:
    """Nutrition5k's definition written literally: 100 * mean |error| / mean truth, a missing value counting as 0."""
    result = {}
    for field in NUTRITION_FIELDS:
        errors = [abs((p.get(field) or 0.0) - t[field]) for p, t in zip(predicted, true)]
        result[field] = 100 * (sum(errors) / len(errors)) / (sum(t[field] for t in true) / len(true))
    result["average"] = sum(result[field] for field in NUTRITION_FIELDS) / len(NUTRITION_FIELDS)
    return result


def test_pmae_hand_computed():
    metric = NutritionPMAE()
    metric.update(PREDICTED, TRUE)
    result = metric.compute()
    # Mass by hand: errors 30, 50, 50 over truths 300, 150, 450 -> 100 * (130 / 3) / (900 / 3).
    assert result["mass_g"].item() == pytest.approx(100 * 130 / 900)
    for key, value in reference_pmae(PREDICTED, TRUE).items():
        assert result[key].item() == pytest.approx(value, rel=1e-6), key
    assert result["missing_rate"].item() == 0.0
    assert set(result) == {*NUTRITION_FIELDS, "average", "missing_rate"}


def test_pmae_reads_text_and_accumulates_across_updates():
    metric = NutritionPMAE()
    # Text answers for the first two samples (the second in a model's own wording), mappings for the third.
    metric.update(["mass: 330 g, energy: 400 kcal, fat: 15.0 g, carbohydrate: 50.0 g, protein: 25.0 g",
                   "It weighs about 100 grams, 260 calories, 8 g fat, 20 g carbs and 5 g protein."],
                  [format_nutrition(TRUE[0]), format_nutrition(TRUE[1])])
    metric.update(PREDICTED[2:], TRUE[2:])
    result = metric.compute()
    for key, value in reference_pmae(PREDICTED, TRUE).items():
        assert result[key].item() == pytest.approx(value, rel=1e-6), key


def test_missing_predicted_fields_count_as_zero_and_are_reported():
    predicted = [
        "mass: 320 g, fat: 10 g",  # energy, carbohydrate, protein missing
        {"mass_g": 140.0, "energy_kcal": None, "fat_g": float("nan"), "carbohydrate_g": "n/a"},  # 4 missing
        "I can't tell.",  # all 5 missing
    ]
    metric = NutritionPMAE()
    metric.update(predicted, TRUE)
    result = metric.compute()
    as_dicts = [{"mass_g": 320.0, "fat_g": 10.0}, {"mass_g": 140.0}, {}]
    for key, value in reference_pmae(as_dicts, TRUE).items():
        assert result[key].item() == pytest.approx(value, rel=1e-6), key
    assert result["energy_kcal"].item() == pytest.approx(100.0)  # nothing predicted: the whole truth is the error
    assert result["missing_rate"].item() == pytest.approx((3 + 4 + 5) / 15)


def test_format_nutrition_round_trip():
    values = {"mass_g": 347.6, "energy_kcal": 1234.4, "fat_g": 11.14, "carbohydrate_g": 0.04, "protein_g": 18.45}
    parsed = parse_nutrition(format_nutrition(values))
    # format_nutrition writes whole numbers (digit tokens are what a model must get right).
    assert parsed == pytest.approx({"mass_g": 348, "energy_kcal": 1234, "fat_g": 11, "carbohydrate_g": 0.0,
                                    "protein_g": 18})
    assert format_nutrition(values) == "mass: 348 g, energy: 1234 kcal, fat: 11 g, carbohydrate: 0 g, protein: 18 g"
    metric = NutritionPMAE()
    metric.update([format_nutrition(t) for t in TRUE], [format_nutrition(t) for t in TRUE])
    assert all(value.item() == 0.0 for value in metric.compute().values())


def test_empty_metric_is_zero():
    metric = NutritionPMAE()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about compute() before update()
        result = metric.compute()
    assert set(result) == {"average", "missing_rate"}  # no target had any field: no field to report
    assert all(value.item() == 0.0 for value in result.values())
    metric.update([], [])
    assert all(value.item() == 0.0 for value in metric.compute().values())


# Targets giving subsets of the fields, as Recipe1M+ (no carbohydrate) and datasets without a weight do.
PARTIAL_TRUE = [
    {"mass_g": 300.0, "energy_kcal": 450.0, "fat_g": 12.0, "protein_g": 20.0},  # no carbohydrate key
    "mass: 150 g, energy: 200 kcal, fat: 8 g, carbohydrate: 15 g, protein: 10 g",
    "energy: 700 kcal, fat: 30 g, carbohydrate: 70 g, protein: 35 g",  # the text does not mention mass
]
PARTIAL_PREDICTED = [
    {"mass_g": 330.0, "energy_kcal": 400.0, "fat_g": 15.0, "carbohydrate_g": 50.0, "protein_g": 25.0},
    "mass: 100 g, energy: 260 kcal, fat: 8 g, protein: 5 g",  # carbohydrate missing
    {"mass_g": 500.0, "energy_kcal": 650.0, "fat_g": 20.0, "carbohydrate_g": 90.0},  # protein missing
]


def test_fields_absent_from_a_target_are_not_scored():
    metric = NutritionPMAE()
    metric.update(PARTIAL_PREDICTED, PARTIAL_TRUE)
    result = {key: value.item() for key, value in metric.compute().items()}
    # Mass over samples 1 and 2 only (the third target has none; its predicted 500 g is ignored): 30 + 50 over 450.
    assert result["mass_g"] == pytest.approx(100 * 80 / 450)
    assert result["energy_kcal"] == pytest.approx(100 * (50 + 60 + 50) / (450 + 200 + 700))
    assert result["fat_g"] == pytest.approx(100 * (3 + 0 + 10) / (12 + 8 + 30))
    # Carbohydrate over samples 2 and 3 (the first's predicted 50 g is ignored): a miss costs 15, then |90 - 70|.
    assert result["carbohydrate_g"] == pytest.approx(100 * (15 + 20) / (15 + 70))
    # Protein: 5, 5, and a miss on the third costing its whole 35.
    assert result["protein_g"] == pytest.approx(100 * (5 + 5 + 35) / (20 + 10 + 35))
    five = [100 * 80 / 450, 100 * 160 / 1350, 100 * 13 / 50, 100 * 35 / 85, 100 * 45 / 65]
    assert result["average"] == pytest.approx(sum(five) / 5)
    # Predicted fields whose target is present: 4 + 5 + 4 = 13, of which 2 are missing.
    assert result["missing_rate"] == pytest.approx(2 / 13)


def test_field_absent_from_every_target_is_left_out():
    metric = NutritionPMAE()
    metric.update([{"mass_g": 150.0, "energy_kcal": 100.0, "carbohydrate_g": 10.0}, {"mass_g": 300.0}],
                  [{"mass_g": 100.0, "energy_kcal": 200.0, "fat_g": None}, "mass: 300 g, energy: 200 kcal"])
    result = {key: value.item() for key, value in metric.compute().items()}
    assert set(result) == {"mass_g", "energy_kcal", "average", "missing_rate"}
    assert result["mass_g"] == pytest.approx(100 * (50 + 0) / 400)  # 12.5
    assert result["energy_kcal"] == pytest.approx(100 * (100 + 200) / 400)  # 75, the second a miss
    assert result["average"] == pytest.approx((12.5 + 75.0) / 2)  # over the two reported fields, not five
    assert result["missing_rate"] == pytest.approx(1 / 4)


def test_flattened_names_skip_unreported_fields():
    from rode_lightning.metrics.suite import flatten_result

    metric = NutritionPMAE()
    metric.update([{"mass_g": 100.0}], [{"mass_g": 100.0}])
    assert set(flatten_result("nutrition", metric.compute())) == {"pmae_mass", "pmae_average",
                                                                   "nutrition_missing_rate"}


@pytest.mark.parametrize("target, message", [
    ("mass: unknown", "mass: unknown"),
    ({"fiber_g": 3.0}, "fiber_g"),
    ({}, "none of"),
    ({"mass_g": float("nan"), "energy_kcal": 200.0}, "mass_g"),
    ({"mass_g": "heavy"}, "heavy"),
    (None, "None"),
])
def test_target_without_any_field_is_an_error(target, message):
    metric = NutritionPMAE()
    with pytest.raises(ValueError, match=re.escape(message)):
        metric.update([PREDICTED[0]], [target])


def test_reset():
    metric = NutritionPMAE()
    metric.update(PREDICTED, TRUE)
    metric.reset()
    metric.update(PREDICTED[:1], TRUE[:1])
    assert metric.compute()["mass_g"].item() == pytest.approx(100 * 30 / 300)


def test_train_mean_baseline_answers_every_dish_with_the_training_mean():
    from rode_lightning.metrics.nutrition import train_mean_baseline

    fields = ("mass_g", "energy_kcal", "fat_g", "carbohydrate_g", "protein_g")
    train = [dict.fromkeys(fields, 100.0), dict.fromkeys(fields, 300.0)]  # mean 200 everywhere
    evaluation = [dict.fromkeys(fields, 100.0), dict.fromkeys(fields, 400.0)]
    # |200 - 100| + |200 - 400| = 300 over a truth sum of 500 -> 60 %
    result = train_mean_baseline(train, evaluation)
    assert all(result[field] == pytest.approx(60.0) for field in fields)
    assert result["average"] == pytest.approx(60.0) and result["missing_rate"] == 0.0


def test_train_mean_baseline_averages_each_field_over_the_records_that_have_it():
    from rode_lightning.metrics.nutrition import train_mean_baseline

    train = [{"mass_g": 100.0, "energy_kcal": 200.0},
             {"mass_g": 300.0, "energy_kcal": 400.0, "carbohydrate_g": 50.0}]  # carbohydrate mean 50, not 25
    evaluation = [{"mass_g": 100.0, "energy_kcal": 300.0, "carbohydrate_g": 40.0},
                  {"mass_g": 400.0, "energy_kcal": 500.0}]
    result = train_mean_baseline(train, evaluation)
    assert set(result) == {"mass_g", "energy_kcal", "carbohydrate_g", "average", "missing_rate"}
    assert result["mass_g"] == pytest.approx(100 * (100 + 200) / 500)  # mean 200: 60
    assert result["energy_kcal"] == pytest.approx(100 * (0 + 200) / 800)  # mean 300: 25
    assert result["carbohydrate_g"] == pytest.approx(100 * 10 / 40)  # only the first has it: 25
    assert result["average"] == pytest.approx((60 + 25 + 25) / 3)
    assert result["missing_rate"] == 0.0
