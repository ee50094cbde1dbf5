"""What a dish's nutrient value may be, checked in one place for every dataset.

Every reader that takes nutrition from a file (Uni-Food's JSONL, Nutrition5k's cafe CSVs, Recipe1M+'s per-ingredient
values, a Hugging Face column) refuses the same things with the same message (:func:`nutrient_value`): a value that
is not a finite number, a negative one, and one above the field's limit, which is a data error rather than a big
meal.
"""

from __future__ import annotations

import math

from rode_lightning.data.errors import DataFormatError

# Above these a dish value is a data error, not a big meal (Nutrition5k's largest dish is about 3.9 kg, 3,900 kcal).
NUTRITION_LIMITS: dict[str, float] = {"mass_g": 5000, "energy_kcal": 10000, "fat_g": 1000,
                                      "carbohydrate_g": 2000, "protein_g": 1000}

BAD_NUTRITION_VALUE = "bad nutrition value"
"""The reason every refused value's message starts with (skips are counted by it), unless the caller names its own
(Nutrition5k's ingredient columns: ``bad ingredient value``)."""


def nutrient_value(value: object, where: str, limit: float | None, reason: str = BAD_NUTRITION_VALUE,
                   text: bool = False) -> float:
    """``value`` as a float when it is a finite number in ``[0, limit]`` (``limit`` ``None``: no upper bound).

    Otherwise a :class:`DataFormatError` ``"<reason>: <where> is <value>, expected a number in [0, <limit>]"``,
    the value as read when it is a number and as written when it is not (``'lots'``, ``nan``). ``text``: a string
    holding a number is read too (a CSV field, a string column); in a JSON file a string is not a number. A boolean
    is never a number, though Python counts it as one.
    """
    number = _as_number(value, text)
    if number is None or not math.isfinite(number) or number < 0 or (limit is not None and number > limit):
        shown = f"{number:g}" if number is not None and math.isfinite(number) else repr(value)
        expected = "a finite number >= 0" if limit is None else f"a number in [0, {float(limit):.15g}]"
        raise DataFormatError(f"{reason}: {where} is {shown}, expected {expected}")
    return number


def _as_number(value: object, text: bool) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (isinstance(value, str) and not text):
        return None
    try:
        return float(value)
    except ValueError:  # text that is no number
        return None
    except OverflowError:  # an integer beyond any float: above every limit
        return math.inf
