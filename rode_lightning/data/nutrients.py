"""What a dish's nutrient value may be, checked in one place for every dataset.

Every reader that takes nutrition from a file (Uni-Food's JSONL, Nutrition5k's cafe CSVs, Recipe1M+'s per-ingredient
values, a Hugging Face column) refuses the same things: a value that is not a finite number, a negative one, and one
above the field's limit, which is a data error rather than a big meal.
"""

from __future__ import annotations

# Above these a dish value is a data error, not a big meal (Nutrition5k's largest dish is about 3.9 kg, 3,900 kcal).
NUTRITION_LIMITS: dict[str, float] = {"mass_g": 5000, "energy_kcal": 10000, "fat_g": 1000,
                                      "carbohydrate_g": 2000, "protein_g": 1000}
