"""The one nutrient value check every reader uses (:func:`nutrient_value`); each reader's tests show it in place."""

from __future__ import annotations

import math

import pytest

from rode_lightning.data.errors import DataFormatError
from rode_lightning.data.nutrients import nutrient_value


@pytest.mark.parametrize("value, text, expected", [(12, False, 12.0), (0.5, False, 0.5), (0, False, 0.0),
                                                   ("1000", True, 1000.0), (" 7.25 ", True, 7.25)])
def test_a_finite_number_within_the_limit_is_read(value, text, expected):
    assert nutrient_value(value, "fat_g", 1000, text=text) == expected


@pytest.mark.parametrize("value, text, shown", [
    (-3, False, "-3"), (1000.5, False, "1000.5"), (math.nan, False, "nan"), (math.inf, True, "inf"),
    ("5", False, "'5'"), ("lots", True, "'lots'"), ("nan", True, "'nan'"), (True, False, "True"),
    (None, True, "None"), ([1], True, r"\[1\]"), (10 ** 400, False, "1" + "0" * 400),
], ids=["negative", "above", "nan", "inf", "text in JSON", "no number", "nan text", "boolean", "none", "list",
        "beyond floats"])
def test_anything_else_is_one_bad_nutrition_value_message(value, text, shown):
    with pytest.raises(DataFormatError, match=rf"^bad nutrition value: fat_g is {shown}, expected a number in "
                                              r"\[0, 1000\]$"):
        nutrient_value(value, "fat_g", 1000, text=text)


def test_without_a_limit_any_finite_amount_is_read_and_the_reason_is_the_callers():
    assert nutrient_value(1e6, "grams", None) == 1e6
    with pytest.raises(DataFormatError, match=r"^bad ingredient value: grams is -1, expected a finite number >= 0$"):
        nutrient_value(-1, "grams", None, "bad ingredient value")
