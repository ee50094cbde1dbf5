"""parse_nutrition on what models actually write, and normalize_recipe.

Expected values are written out by hand from the text (unit conversions spelled as arithmetic), not taken from the
parser's output.
"""

from __future__ import annotations

import math
import random

import pytest

from rode_lightning.conventions import NUTRITION_FIELDS
from rode_lightning.metrics.parsing import normalize_recipe, parse_nutrition


def nutrition(mass=None, energy=None, fat=None, carbohydrate=None, protein=None) -> dict[str, float | None]:
    return {"mass_g": mass, "energy_kcal": energy, "fat_g": fat, "carbohydrate_g": carbohydrate, "protein_g": protein}


NUTRITION_CASES = [
    pytest.param("mass: 348 g, energy: 440 kcal, fat: 11.1 g, carbohydrate: 64.5 g, protein: 18.4 g",
                 nutrition(348, 440, 11.1, 64.5, 18.4), id="trained-format"),
    pytest.param("protein: 18.4 g, carbohydrate: 64.5 g, fat: 11.1 g, energy: 440 kcal, mass: 348 g",
                 nutrition(348, 440, 11.1, 64.5, 18.4), id="reversed-order"),
    pytest.param("Calories: 520\nProtein: 25 g\nFat: 18 g\nCarbs: 60 g\nWeight: 400 g",
                 nutrition(400, 520, 18, 60, 25), id="lines-synonyms-no-energy-unit"),
    pytest.param("- **Mass:** ~300-350 g\n- **Energy:** approx. 1841 kJ\n- **Total fat:** 11,5 g\n"
                 "- **Carbohydrates:** 64.5 grams\n- **Proteins:** 18 g",
                 nutrition((300 + 350) / 2, 1841 / 4.184, 11.5, 64.5, 18), id="markdown-range-kJ-decimal-comma"),
    pytest.param("This plate weighs around 0.45 kg and has roughly 600 kcal. It contains 20 g protein, 25 g fat "
                 "and 70 g carbohydrates.",
                 nutrition(0.45 * 1000, 600, 25, 70, 20), id="prose-value-before-label-kg"),
    pytest.param("The dish weighs about 350 grams and contains approximately 450 calories, 12 g of fat, 60 g of carbs "
                 "and 20 g of protein.",
                 nutrition(350, 450, 12, 60, 20), id="prose-of"),
    pytest.param("Nutrition facts: Total Fat 11g, Saturated Fat 3g, Cholesterol 30mg, Sodium 500mg, "
                 "Total Carbohydrate 64g, Sugars 5g, Protein 18g, Calories 440",
                 nutrition(None, 440, 11, 64, 18), id="label-style-with-other-nutrients"),
    pytest.param("Energy: 440 kcal (1841 kJ)", nutrition(energy=440), id="first-mention-wins"),
    pytest.param("Energy (kJ): 1841\nMass (kg): 0.5", nutrition(0.5 * 1000, 1841 / 4.184), id="unit-in-header"),
    pytest.param("Protein: 18400 mg, Mass: 1,200 g, energy: 1,200 kcal",
                 nutrition(1200, 1200, protein=18400 / 1000), id="mg-and-thousands-separator"),
    pytest.param("Carbohydrates (of which sugars 5 g): 64 g", nutrition(carbohydrate=64), id="aside-skipped"),
    pytest.param("Fat 11 g Carbohydrate 64 g Protein 18 g", nutrition(fat=11, carbohydrate=64, protein=18),
                 id="no-separators"),
    pytest.param("Protein 18 g; fat 12 g; 60 g carbs", nutrition(fat=12, carbohydrate=60, protein=18),
                 id="mixed-styles"),
    pytest.param("Mass: unknown, Energy: 440 kcal", nutrition(energy=440), id="unknown-field-stays-missing"),
    pytest.param("The dish contains between 300 and 400 calories.", nutrition(energy=(300 + 400) / 2),
                 id="between-range-unlabelled-energy"),
    pytest.param("Fat: 20%  Protein: 300 kcal", nutrition(), id="wrong-unit-kinds"),
    pytest.param('{"mass_g": 348, "energy_kcal": 440, "fat_g": 11.1, "carbohydrate_g": 64.5, "protein_g": 18.4}',
                 nutrition(348, 440, 11.1, 64.5, 18.4), id="json-field-keys"),
    pytest.param("| Nutrient | Amount |\n|---|---|\n| Mass | 348 g |\n| Energy | 440 kcal |\n| Fat | 11.1 g |",
                 nutrition(348, 440, 11.1), id="markdown-table-rows"),
    pytest.param("| Nutrient | Amount |\n|---|---|\n| Calories | 450 kcal |\n| Total Fat | 12 g |\n"
                 "| Carbohydrates | 60 g |\n| Protein | 20 g |",
                 nutrition(None, 450, 12, 60, 20), id="markdown-table-nutrient-amount"),
    pytest.param("| Nutrient | Amount | % Daily Value |\n| :--- | ---: | ---: |\n| Calories | 450 | |\n"
                 "| Fat | 12 g | 15% |\n| Protein | 20 g | 40% |",
                 nutrition(None, 450, 12, None, 20), id="markdown-table-daily-value-column"),
    pytest.param("| Calories | Fat | Carbs | Protein |\n|---|---|---|---|\n| 450 kcal | 12 g | 60 g | 20 g |",
                 nutrition(None, 450, 12, 60, 20), id="markdown-table-fields-as-columns"),
    pytest.param("| Mass (g) | Energy (kJ) | Fat (g) |\n|---|---|---|\n| 350 | 1841 | 12 |",
                 nutrition(350, 1841 / 4.184, 12), id="markdown-table-columns-units-in-header"),
    pytest.param("* **Calories**: 450\n* **Protein**: 20g\n* **Fat**: 12g\n* **Carbs**: 60g",
                 nutrition(None, 450, 12, 60, 20), id="bullets-bold-label-colon-outside"),
    pytest.param("## Estimated nutrition (per serving)\n- **Weight:** 350 g\n- **Calories:** 450 kcal\n"
                 "- **Fat:** 12 g\n- **Carbohydrates:** 60 g\n- **Protein:** 20 g",
                 nutrition(350, 450, 12, 60, 20), id="heading-then-bold-bullets"),
    pytest.param("## Nutrition Facts\n### Calories\n450 kcal\n### Fat\n12 g\n### Protein\n20 g",
                 nutrition(None, 450, 12, None, 20), id="headings-as-labels"),
    pytest.param("<think>The rice is about 200 g, 260 kcal; with the egg maybe 30 g of fat? No, less.</think>\n"
                 "mass: 300 g, energy: 350 kcal, fat: 8 g",
                 nutrition(300, 350, 8), id="think-block-ignored"),
    pytest.param("<think>Fat 30 g, protein 12 g", nutrition(), id="unfinished-think-block-is-no-answer"),
    pytest.param("Weight: 1.5 lbs, kJ: 2092", nutrition(1.5 * 453.59237, 2092 / 4.184), id="pounds-kJ-label"),
    pytest.param("Calories from fat: 90. Calories: 440", nutrition(energy=440), id="calories-from-fat"),
    pytest.param("I cannot estimate the nutrition of this dish from the image.", nutrition(), id="refusal"),
    pytest.param("The image shows 2 eggs and 100 g of rice.", nutrition(), id="numbers-without-fields"),
    pytest.param("Lorem ipsum 42 dolor;; ** -- ?? 3.14.15 \x00 \u00e9\u00e9 ##", nutrition(), id="garbage"),
    pytest.param("", nutrition(), id="empty"),
]


@pytest.mark.parametrize("text, expected", NUTRITION_CASES)
def test_parse_nutrition(text, expected):
    parsed = parse_nutrition(text)
    assert list(parsed) == list(NUTRITION_FIELDS)
    for field, value in expected.items():
        if value is None:
            assert parsed[field] is None, (field, parsed)
        else:
            assert parsed[field] == pytest.approx(value), (field, parsed)


def test_parse_nutrition_never_raises():
    # Shuffled fragments of nutrition text: whatever comes out must be None or a finite float per field.
    fragments = ["mass", "energy", "kcal", "kJ", "fat", "carbs", "protein", ":", ",", "-", "to", "between", "and",
                 "(", ")", "**", "\n", "~", "12", "3,5", "0.4", "1,200", "g", "kg", "mg", "%", "of", "9" * 400, "é"]
    rng = random.Random(0)
    for _ in range(300):
        text = " ".join(rng.choice(fragments) for _ in range(rng.randint(0, 20)))
        parsed = parse_nutrition(text)
        assert set(parsed) == set(NUTRITION_FIELDS)
        assert all(value is None or math.isfinite(value) for value in parsed.values()), (text, parsed)
    assert parse_nutrition(None) == nutrition()  # type: ignore[arg-type]


@pytest.mark.parametrize("text, expected", [
    ("1. Cook the rice. 2. Beat the egg. 3. Fry for 10 minutes.", "Cook the rice. Beat the egg. Fry for 10 minutes."),
    ("Cook the rice. Beat the egg. Fry for 10 minutes.", "Cook the rice. Beat the egg. Fry for 10 minutes."),
    ("**Step 1:** Preheat the oven to 180.\n**Step 2:** Add 1.5 cups of flour.\n- Serve warm.",
     "Preheat the oven to 180. Add 1.5 cups of flour. Serve warm."),
    ("## Instructions\n1) Mix.\n2) Bake at 350. Cut into 2 pieces.",
     "Instructions Mix. Bake at 350. Cut into 2 pieces."),
    ("Whisk. 2 eggs go in next.", "Whisk. 2 eggs go in next."),
    ("", ""),
])
def test_normalize_recipe(text, expected):
    assert normalize_recipe(text) == expected
