"""Reading model text back into structured answers.

Ingredient lists are read by :mod:`rode_lightning.metrics.ingredient_parsing` (re-exported here:
:func:`parse_ingredients`, :func:`normalize_ingredient`), nutrition answers into the five dish-level values
(:func:`parse_nutrition`), and recipes are stripped of their step numbering and markdown before SacreBLEU and ROUGE-L
see them (:func:`normalize_recipe`). Both parsers read only the answer of a reasoning model, not its ``<think>``
block (:func:`final_answer`): the reasoning tries out numbers and names that the answer then corrects.
"""

from __future__ import annotations

import bisect
import math
import re

from rode_lightning.conventions import NUTRITION_FIELDS, normalize_ingredient
from rode_lightning.metrics.ingredient_parsing import final_answer, parse_ingredients

__all__ = ["final_answer", "normalize_recipe", "parse_ingredients", "parse_nutrition"]

# --------------------------------------------------------------------------------------------------------------------
# Nutrition
#
# The target format is ``mass: 348 g, energy: 440 kcal, fat: 11 g, carbohydrate: 64 g, protein: 18 g``, but a
# model (and above all a baseline that was never fine-tuned) writes "about 450 calories and 12 g of fat", markdown
# lists, kJ, kg or ranges. A parser that only reads the trained format would score such answers as "missing" and
# punish the baselines for their wording rather than their estimates, so the parser reads the text as quantities
# (a number or range with an optional unit) and labels (words naming a field), and pairs them.

_NUMBER = r"(?<![A-Za-z0-9_])\d+(?:,\d{3})*(?:[.,]\d+)?"
_RANGE_SEPARATOR = r"\s*(?:-|–|—|to)\s*"

# Unit spelling -> (family, factor to the field's unit). Food "Calories"/"cal" are kilocalories.
_UNITS: dict[str, tuple[str, float]] = {
    "kilocalorie": ("energy", 1.0), "kcal": ("energy", 1.0), "calorie": ("energy", 1.0), "cal": ("energy", 1.0),
    "kilojoule": ("energy", 1 / 4.184), "kj": ("energy", 1 / 4.184),
    "kilogram": ("mass", 1000.0), "kg": ("mass", 1000.0), "milligram": ("mass", 0.001), "mg": ("mass", 0.001),
    "gram": ("mass", 1.0), "gramme": ("mass", 1.0), "gr": ("mass", 1.0), "g": ("mass", 1.0),
    "ounce": ("mass", 28.349523125), "oz": ("mass", 28.349523125), "pound": ("mass", 453.59237),
    "lb": ("mass", 453.59237),
    "%": ("percent", 1.0), "percent": ("percent", 1.0),
}
_UNIT = (r"(?:kilocalories?|kcals?|calories?|cals?|kilojoules?|kj|kilograms?|kgs?|milligrams?|mgs?|grams?|grammes?"
         r"|grs?|g|ounces?|oz|pounds?|lbs?|percent|%)")

_QUANTITY = re.compile(
    rf"(?:between\s+(?P<between_low>{_NUMBER})\s+(?:and|&)\s+(?P<between_high>{_NUMBER})"
    rf"|(?P<low>{_NUMBER})(?:{_RANGE_SEPARATOR}(?P<high>{_NUMBER}))?)"
    rf"(?:\s*(?P<unit>{_UNIT})(?![A-Za-z]))?",
    re.IGNORECASE,
)

_FIELD_WORDS: dict[str, str] = {
    # "other" names nutrients we do not score; they are matched so that their numbers are not given to a neighbour
    # ("Carbohydrates (of which sugars 5 g): 64 g") and so that "saturated fat" is not read as fat.
    "other": r"(?:(?:mono|poly)?unsaturated|saturated|sat\.?|trans)\s+fats?|fatty\s+acids?|calories\s+from\s+\w+"
             r"|(?:added\s+)?sugars?|(?:dietary\s+)?fib(?:er|re)s?|sodium|salt|cholesterol|potassium|calcium|iron"
             r"|vitamins?(?:\s+\w\d*)?",
    "mass_g": r"mass|weight|weighs?|weighing|portion\s+size|serving\s+size",
    "energy_kcal": r"energy|kilocalories|calories|calorie|kcals?|cals?|kilojoules|kj",
    "fat_g": r"(?:total\s+)?fats?|lipids?",
    "carbohydrate_g": r"(?:total\s+)?carbohydrates?|carbs?",
    "protein_g": r"proteins?",
}
_LABEL = re.compile(
    r"\b(?:" + "|".join(f"(?P<{field}>{words})" for field, words in _FIELD_WORDS.items()) + r")"
    r"(?:_(?:g|kcal|kj|mg|kg))?\b",  # our own field keys (mass_g, energy_kcal) as a model may echo them in JSON
    re.IGNORECASE,
)
# A unit written with the label rather than the number: "Energy (kJ): 1841", "energy in kJ: 1841", "energy_kj".
_HEADER_UNIT = re.compile(rf"[(\[]\s*(?P<unit>{_UNIT})\s*[)\]]|\bin\s+(?P<in_unit>{_UNIT})\b|_(?P<key_unit>kj)\b",
                          re.IGNORECASE)
_UNIT_LABEL = re.compile(r"kj|kilojoules?", re.IGNORECASE)  # "kJ: 1841" is a label that carries its unit
_PARENTHETICAL = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_ABBREVIATION_DOT = re.compile(r"\b(?:approx|appr|ca|est|c)\.", re.IGNORECASE)
_GAP_BREAK = re.compile(r"[,;]|[.!?](?=\s|$)|\b(?:and|but|while|whereas|or)\b", re.IGNORECASE)
_VALUE_FIRST_GAP = re.compile(r"[ \t]*(?:of[ \t]+)?(?:the[ \t]+)?(?:total[ \t]+)?", re.IGNORECASE)
_MAX_GAP = 48


def parse_nutrition(text: str) -> dict[str, float | None]:
    """The five dish-level values in free model text, in grams and kcal; ``None`` for a field the text does not give.

    Reads labels in any order and wording (``calories``/``kcal``/``energy``, ``carbs``, ``total fat``, ``weight``),
    with the value after the label (``Protein: ~18 g``, ``**Fat:** 11,1g``, ``Energy (kJ): 1841``) or before it
    (``12 g of fat``, ``450 calories``). Units convert to the field's unit (kg, mg, oz, lb; kJ / 4.184); a number
    without unit is taken to be in the field's unit; a unit of the wrong kind (``Fat: 20 %``, ``Protein: 300 kcal``)
    is not a value of that field. Ranges (``300-350 g``, ``300 to 350 g``, ``between 300 and 350 g``) give their
    midpoint. A number with an energy unit and no label (``... about 450 kcal.``) is the energy. The first mention
    of a field wins. Markdown tables are read by rows (``| Fat | 12 g |``) or, where the header row names the
    fields, by columns (``| Calories | Fat |`` over ``| 450 | 12 g |``). Only the answer after a ``<think>`` block
    counts. Never raises; text with no recognisable value gives all ``None``.
    """
    result: dict[str, float | None] = dict.fromkeys(NUTRITION_FIELDS)
    try:
        text = final_answer(text if isinstance(text, str) else str(text))
        _fill_nutrition(_transpose_tables(text), result)
    except Exception:  # a parser bug must cost one answer its values, never an evaluation run
        pass
    return result


_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")  # |---|:--:|


def _transpose_tables(text: str) -> str:
    """Text with each markdown table whose header row names fields rewritten as ``header: value`` lines.

    Read as they stand, such columns put every label before the next label rather than before its value, so none
    pairs; tables with a label per row (``| Fat | 12 g |``) already read as "label value" and are left alone."""
    lines, out = text.splitlines(), []
    index = 0
    while index < len(lines):
        end = index
        while end < len(lines) and lines[end].lstrip().startswith("|"):
            end += 1
        if end == index:
            out.append(lines[index])
            index += 1
            continue
        rows = lines[index:end]
        cells = [row.strip().strip("|").split("|") for row in rows]
        if (len(rows) > 2 and _TABLE_RULE.match(rows[1])
                and sum(_LABEL.search(cell) is not None for cell in cells[0]) >= 2):
            out.extend(f"{header.strip()}: {value.strip()}" for header, value in zip(cells[0], cells[2]))
        else:
            out.extend(rows)
        index = end
    return "\n".join(out)


def _fill_nutrition(text: str, result: dict[str, float | None]) -> None:
    quantities = [match for match in _QUANTITY.finditer(text) if _quantity_value(match) is not None]
    starts = [match.start() for match in quantities]
    ends = [match.end() for match in quantities]  # sorted too: quantities do not overlap

    def inside_quantity(position: int) -> bool:
        index = bisect.bisect_right(starts, position) - 1
        return index >= 0 and position < quantities[index].end()

    # A label word inside a quantity is its unit ("450 calories"), not a label.
    labels = [label for label in _LABEL.finditer(text) if not inside_quantity(label.start())]
    # For each label, the quantity it would pair with in each style and the value that gives (None where the unit
    # does not fit the field), or None where the text between them rules the pairing out.
    after = [_pair_after(text, label, quantities, starts) for label in labels]
    before = [_pair_before(text, label, quantities, ends) for label in labels]

    # One answer uses one style throughout. "Fat 11 g Carbohydrate 64 g" also reads, wrongly, as "11 g carbohydrate",
    # so take the style that pairs more labels first (label-first on a tie: the trained format) and let the other
    # style only fill in what is left.
    def pairs(candidates: list[tuple[int, float | None] | None]) -> int:
        return sum(pair is not None and pair[1] is not None for pair in candidates)

    passes = (after, before) if pairs(after) >= pairs(before) else (before, after)
    claimed: set[int] = set()
    paired: set[int] = set()
    for candidates in passes:
        for index, pair in enumerate(candidates):
            if index in paired or pair is None or pair[1] is None or pair[0] in claimed:
                continue
            claimed.add(pair[0])
            paired.add(index)
            field = labels[index].lastgroup  # the alternative that matched: a field or "other"
            if field in result and result[field] is None:
                result[field] = pair[1]
    if result["energy_kcal"] is None:
        # An unlabelled energy ("... about 450 kcal."), but not one a label claims with the wrong unit: "Protein:
        # 300 kcal" is energy from protein, not the dish's energy.
        near_label = {pair[0] for pair in after + before if pair is not None}
        for index, quantity in enumerate(quantities):
            if index not in claimed and index not in near_label and _unit_of(quantity)[0] == "energy":
                result["energy_kcal"] = _field_value(quantity, "energy_kcal", None)
                break


def _pair_after(text: str, label: re.Match, quantities: list[re.Match],
                starts: list[int]) -> tuple[int, float | None] | None:
    """The value written after its label: "Protein: ~18 g", "**Energy (kJ):** 1841", "Weight is about 0.4 kg"."""
    first = bisect.bisect_left(starts, label.end())
    for index, quantity in enumerate(quantities[first:], start=first):
        gap = text[label.end():quantity.start()]
        if gap.count("(") > gap.count(")"):
            continue  # inside an aside: "Carbohydrates (of which sugars 5 g): 64 g"
        break
    else:
        return None
    header = _HEADER_UNIT.search(gap)
    cleaned = _HEADER_UNIT.sub(" ", _PARENTHETICAL.sub(" ", gap))
    cleaned = _ABBREVIATION_DOT.sub(" ", cleaned)
    if len(cleaned) > _MAX_GAP or _GAP_BREAK.search(cleaned):
        return None
    if any(other.lastgroup != label.lastgroup for other in _LABEL.finditer(cleaned)):
        return None  # "Mass: unknown, energy: 440 kcal" must not give the mass 440
    if "\n" in cleaned and re.search(r"[A-Za-z]", cleaned):
        return None  # a line break may separate a label from its value ("**Energy**\n440 kcal"), not from prose
    header_unit = next((unit for unit in header.groups() if unit), None) if header else None
    if header_unit is None:
        own = _HEADER_UNIT.search(label.group(0))  # "energy_kj"
        header_unit = next((unit for unit in own.groups() if unit), None) if own else None
    if header_unit is None and _UNIT_LABEL.fullmatch(label.group(0)):
        header_unit = "kj"
    return index, _field_value(quantity, label.lastgroup, header_unit)


def _pair_before(text: str, label: re.Match, quantities: list[re.Match],
                 ends: list[int]) -> tuple[int, float | None] | None:
    """The value written before its label: "12 g of fat", "18g protein". It needs its unit: "12 fat" is too
    ambiguous to pair, and the unit is what keeps "Fat 11 g Calories 440" from reading "11 g calories"."""
    index = bisect.bisect_right(ends, label.start()) - 1  # the last quantity that ends before the label
    if index < 0:
        return None
    quantity = quantities[index]
    if quantity.group("unit") is None or not _VALUE_FIRST_GAP.fullmatch(text[quantity.end():label.start()]):
        return None
    return index, _field_value(quantity, label.lastgroup, None)


def _to_float(number: str) -> float:
    if "." in number:
        return float(number.replace(",", ""))  # "1,200.5"
    if number.count(",") == 1:
        whole, fraction = number.split(",")
        # "1,200" is a thousands separator, "11,1" and "0,350" decimal commas.
        if len(fraction) == 3 and whole != "0":
            return float(whole + fraction)
        return float(f"{whole}.{fraction}")
    return float(number.replace(",", ""))


def _quantity_value(match: re.Match) -> float | None:
    try:
        if match.group("between_low") is not None:
            value = (_to_float(match.group("between_low")) + _to_float(match.group("between_high"))) / 2
        else:
            low, high = match.group("low"), match.group("high")
            value = _to_float(low) if high is None else (_to_float(low) + _to_float(high)) / 2
    except ValueError:
        return None
    return value if math.isfinite(value) else None  # 400 nines read as inf would make every pMAE infinite


def _unit_of(quantity: re.Match, default: str | None = None) -> tuple[str | None, float]:
    unit = quantity.group("unit") or default
    if unit is None:
        return None, 1.0
    unit = unit.lower()
    key = unit if unit in _UNITS else unit.rstrip("s")
    return _UNITS.get(key, (None, 1.0))


def _field_value(quantity: re.Match, field: str, header_unit: str | None) -> float | None:
    if field == "other":
        return _quantity_value(quantity)  # scored by nobody, but claimed so that no neighbouring label takes it
    family, factor = _unit_of(quantity, header_unit)
    expected = "energy" if field == "energy_kcal" else "mass"
    if family not in (None, expected):
        return None
    value = _quantity_value(quantity)
    return None if value is None else value * factor


# --------------------------------------------------------------------------------------------------------------------
# Recipes

_MARKDOWN_EMPHASIS = re.compile(r"\*\*|__")
_LINE_MARKER = re.compile(r"^[ \t]*(?:#+|[-*\u2022\u00b7])[ \t]+", re.MULTILINE)  # headings and bullets
# A step number opens a line or follows the end of a sentence: "1. Cook", ". 2) Beat", "Step 3: Bake". Quantities
# inside a step ("Bake for 20 minutes", "1.5 cups") follow neither and have no "." or ")" of their own, so they stay.
_STEP_NUMBER = re.compile(
    r"(^[ \t]*|[.!?;:][ \t\n]+)(?:step[ \t]*\d{1,2}[ \t]*[.):\-\u2013]?|\d{1,2}[ \t]*[.)](?!\d))[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)


def normalize_recipe(text: str) -> str:
    """A recipe as plain step text: step numbers, bullets and markdown removed, whitespace collapsed.

    Targets are written ``1. Cook the rice. 2. Beat the egg.``. Left in, the numbers are tokens that every numbered
    answer matches (``1 .``, ``2 .`` and the n-grams across them), so SacreBLEU and ROUGE-L would reward the list
    format rather than the cooking steps, and an answer with bullets or "Step 1:" would be penalised for the same
    steps. The scores therefore compare normalised text on both sides; case and punctuation are kept, as SacreBLEU
    expects detokenised text.
    """
    if not isinstance(text, str):
        return ""
    text = _MARKDOWN_EMPHASIS.sub("", text)
    text = _LINE_MARKER.sub("", text)
    text = _STEP_NUMBER.sub(r"\1", text)
    return " ".join(text.split())
