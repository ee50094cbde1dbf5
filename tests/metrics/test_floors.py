import pytest

from rode_lightning.metrics.floors import label_floors
from rode_lightning.metrics.ingredients import most_frequent_baseline
from rode_lightning.metrics.nutrition import train_mean_baseline

TRAIN_INGREDIENTS = [["rice", "egg"], ["rice", "beef"], ["rice", "egg", "pea"]]
HELD_INGREDIENTS = [["rice", "egg"], ["beef"]]
TRAIN_NUTRITION = [{"mass_g": 100.0, "energy_kcal": 200.0}, {"mass_g": 300.0, "energy_kcal": 400.0}]
HELD_NUTRITION = [{"mass_g": 250.0, "energy_kcal": 300.0}]


def test_the_floors_are_the_two_baselines_of_the_labels():
    result = label_floors(TRAIN_INGREDIENTS, HELD_INGREDIENTS, TRAIN_NUTRITION, HELD_NUTRITION)
    ingredients = most_frequent_baseline(TRAIN_INGREDIENTS, HELD_INGREDIENTS)
    nutrition = train_mean_baseline(TRAIN_NUTRITION, HELD_NUTRITION)
    assert result.ingredients == ingredients and result.nutrition == nutrition
    assert result.floors == {"ingredient_iou_most_frequent": ingredients["dataset_iou"],
                             "pmae_average_train_mean": nutrition["average"]}
    # Known values: k = 2 (mean training set size 7/3 rounded), guess {rice, egg}: intersections 2 and 0 over
    # unions 2 and 3 -> dataset IoU 2/5; the training means 200 g and 300 kcal against 250 g and 300 kcal.
    assert result.floors["ingredient_iou_most_frequent"] == pytest.approx(2 / 5)
    assert nutrition["mass_g"] == pytest.approx(100 * 50 / 250)


@pytest.mark.parametrize("missing", ["train ingredients", "held ingredients", "train nutrition", "held nutrition"])
def test_a_task_without_labels_on_either_side_has_no_floor(missing):
    labels = {"train ingredients": TRAIN_INGREDIENTS, "held ingredients": HELD_INGREDIENTS,
              "train nutrition": TRAIN_NUTRITION, "held nutrition": HELD_NUTRITION}
    labels[missing] = []
    result = label_floors(*labels.values())
    kept = "pmae_average_train_mean" if "ingredients" in missing else "ingredient_iou_most_frequent"
    assert set(result.floors) == {kept}
    assert (result.ingredients is None) == ("ingredients" in missing)
    assert (result.nutrition is None) == ("nutrition" in missing)
