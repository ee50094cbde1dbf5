"""The parsers on answers written the way real models write them.

Each answer is in the style of a model we compare with or score: LLaVA-1.5 (chatty prose, markdown bullets, "In the
image, there is ..."), food LMMs (FoodLMM's terse lead-ins, Food-R1-like ``<think>`` reasoning before the answer),
and the terse lists of our own fine-tuned models. Expected values are written by hand from the text: what a person
would list as the ingredients (or read as the nutrition values) of that answer, in the answer's order.
"""

from __future__ import annotations

import pytest

from rode_lightning.metrics.parsing import parse_ingredients, parse_nutrition

INGREDIENT_ANSWERS = [
    # ---- LLaVA-1.5: prose
    pytest.param("In the image, there is a plate of food with rice, a fried egg, and some vegetables such as carrots "
                 "and peas.",
                 ["rice", "fried egg", "carrot", "pea"], id="llava-in-the-image-there-is"),
    pytest.param("The dish in the image appears to be a stir-fry containing rice, broccoli, carrots, and chicken.",
                 ["rice", "broccoli", "carrot", "chicken"], id="llava-appears-to-be-containing"),
    pytest.param("The image features a delicious plate of spaghetti with meatballs, topped with grated parmesan "
                 "cheese and fresh basil leaves.",
                 ["spaghetti", "meatball", "grated parmesan cheese", "fresh basil leave"], id="llava-features-topped"),
    pytest.param("This appears to be a Caesar salad with romaine lettuce, croutons, and parmesan cheese.",
                 ["romaine lettuce", "crouton", "parmesan cheese"], id="llava-dish-name-with"),
    pytest.param("The dish contains rice and chicken. It is garnished with sesame seeds and green onions. Overall, "
                 "it looks like a delicious and healthy meal.",
                 ["rice", "chicken", "sesame seed", "green onion"], id="llava-several-sentences"),
    pytest.param("I can see rice, a fried egg, and some sliced cucumbers in the image.",
                 ["rice", "fried egg", "sliced cucumber"], id="llava-i-can-see"),
    pytest.param("The pizza has pepperoni, mozzarella cheese and black olives on it.",
                 ["pepperoni", "mozzarella cheese", "black olive"], id="llava-subject-has"),
    pytest.param("The image shows a bowl of ramen with noodles, sliced pork, a soft-boiled egg, and nori. The broth "
                 "appears to be rich and flavorful.",
                 ["ramen", "noodle", "sliced pork", "soft boiled egg", "nori"], id="llava-shows-bowl-of"),
    pytest.param("The dish is a classic margherita pizza, topped with tomato sauce, fresh mozzarella, and basil.",
                 ["tomato sauce", "fresh mozzarella", "basil"], id="llava-dish-is-topped-with"),
    pytest.param("The dish contains rice and is topped with a fried egg.",
                 ["rice", "fried egg"], id="llava-two-cues-one-sentence"),
    pytest.param("There are no onions in this dish; it contains tomatoes and cucumbers.",
                 ["tomato", "cucumber"], id="llava-negation"),
    pytest.param("Rice, black beans, and grilled chicken are the main ingredients of this burrito bowl.",
                 ["rice", "black bean", "grilled chicken"], id="llava-list-before-cue"),
    pytest.param("It looks like a burger with a beef patty, lettuce, tomato, cheese and a sesame bun.",
                 ["beef patty", "lettuce", "tomato", "cheese", "sesame bun"], id="llava-looks-like-with"),
    pytest.param("The dish includes vegetables (e.g., carrots, peas) and rice.",
                 ["carrot", "pea", "rice"], id="llava-parenthetical-examples"),
    pytest.param("The image features a plate of sushi, including salmon nigiri, tuna rolls and cucumber.",
                 ["salmon nigiri", "tuna roll", "cucumber"], id="llava-including-replaces-general"),
    pytest.param("Sure! Here are the ingredients: rice, egg, and some herbs for garnish.",
                 ["rice", "egg", "herb"], id="llava-here-are-trailing-prose"),
    # ---- LLaVA-1.5: markdown
    pytest.param("The main ingredients of this dish are:\n\n1. Rice\n2. Chicken\n3. Broccoli\n\nThese ingredients are "
                 "combined to create a delicious and healthy meal.",
                 ["rice", "chicken", "broccoli"], id="llava-numbered-with-closing-prose"),
    pytest.param("Based on the image, the dish appears to contain the following ingredients:\n- Spaghetti\n"
                 "- Tomato sauce\n- Meatballs\n- Parmesan cheese",
                 ["spaghetti", "tomato sauce", "meatball", "parmesan cheese"], id="llava-intro-then-bullets"),
    pytest.param("Sure! Here are the ingredients I can see in the image:\n\n* **Rice**: white steamed rice\n"
                 "* **Egg**: a fried egg on top\n* **Scallions**: chopped, sprinkled on top",
                 ["rice", "egg", "scallion"], id="llava-bold-name-colon-description"),
    pytest.param("The ingredients of the dish include:\n\n1. Chicken: The dish features pieces of chicken, which are "
                 "likely cooked and seasoned.\n2. Rice: White rice is served alongside.\n3. Vegetables: There are "
                 "carrots and green beans.",
                 ["chicken", "rice", "carrot", "green bean"], id="llava-numbered-name-colon-sentence"),
    pytest.param("1. **Grilled chicken** - sliced chicken breast\n2. **Quinoa** \u2013 fluffy and light\n"
                 "3. **Avocado**: half an avocado, sliced",
                 ["grilled chicken", "quinoa", "avocado"], id="llava-bold-name-dash-description"),
    pytest.param("The dish contains:\n- **Protein:** grilled chicken\n- **Vegetables:** broccoli, carrots\n"
                 "- **Grains:** brown rice",
                 ["grilled chicken", "broccoli", "carrot", "brown rice"], id="llava-category-labels"),
    pytest.param("## Ingredients\n* Rice (steamed)\n* Chicken (grilled, sliced)\n* Broccoli",
                 ["rice", "chicken", "broccoli"], id="markdown-heading-parenthetical-notes"),
    pytest.param("**Ingredients:**\n- 200 g rice\n- 2 eggs\n- 1/2 cup milk\n- a pinch of salt\n- 2 tbsp olive oil\n"
                 "- 3 slices of bread",
                 ["rice", "egg", "milk", "salt", "olive oil", "bread"], id="markdown-quantities-and-units"),
    pytest.param("- Salt and pepper to taste\n- \u00bd cup grated cheese\n- 1 1/2 cups milk\n- about 200g of chicken",
                 ["salt", "pepper", "grated cheese", "milk", "chicken"], id="markdown-fractions-approximate"),
    pytest.param("| Ingredient | Amount |\n|---|---|\n| Rice | 200 g |\n| Egg | 2 |\n| Scallions | 1 tbsp |",
                 ["rice", "egg", "scallion"], id="markdown-table"),
    pytest.param("| Amount | Ingredient | Notes |\n| ---: | :--- | --- |\n| 200 g | **Rice** | steamed |\n"
                 "| 2 | Eggs | fried |",
                 ["rice", "egg"], id="markdown-table-ingredient-column-second"),
    pytest.param("## Ingredients\n- 2 cups flour\n- 1 cup sugar\n- 2 large eggs\n\n## Instructions\n"
                 "1. Mix the flour and sugar.\n2. Add the eggs and the milk.",
                 ["flour", "sugar", "egg"], id="markdown-ingredients-then-instructions"),
    pytest.param("**Main ingredients:**\n- Noodles\n- Shrimp\n\n**Garnish:** lime wedges, cilantro",
                 ["noodle", "shrimp", "lime wedge", "cilantro"], id="markdown-bold-lead-in-and-category-line"),
    pytest.param("Here's what I can identify:\n\n- A bed of white rice, which serves as the base.\n"
                 "- Grilled salmon fillet, cooked to perfection.\n- Steamed broccoli florets on the side.",
                 ["white rice", "grilled salmon fillet", "steamed broccoli floret"], id="llava-bullets-with-prose"),
    # ---- food LMMs
    pytest.param("The ingredients are: beef, onion, garlic, soy sauce.",
                 ["beef", "onion", "garlic", "soy sauce"], id="foodlmm-lead-in"),
    pytest.param("Ingredients: tomato, mozzarella cheese, basil, olive oil",
                 ["tomato", "mozzarella cheese", "basil", "olive oil"], id="foodlmm-label"),
    pytest.param("This dish mainly consists of noodles, pork and scallions.",
                 ["noodle", "pork", "scallion"], id="foodlmm-consists-of"),
    pytest.param("This dish is made with beef, onions and garlic.",
                 ["beef", "onion", "garlic"], id="foodlmm-made-with"),
    pytest.param("<think>The image shows a bowl with white rice and a fried egg; green bits look like scallions, and "
                 "maybe there is some soy sauce.</think>\nrice, egg, scallion",
                 ["rice", "egg", "scallion"], id="food-r1-think-then-terse"),
    pytest.param("<think>\nI see noodles and pork. Is that an egg? Yes, soft-boiled.\n</think>\n"
                 "<answer>ramen noodles, pork belly, soft-boiled egg, nori</answer>",
                 ["ramen noodle", "pork belly", "soft boiled egg", "nori"], id="food-r1-answer-tag"),
    pytest.param("<think>Let me look at the dish. There is rice, and</think>\n\nThe ingredients are: rice, chicken, "
                 "curry sauce.",
                 ["rice", "chicken", "curry sauce"], id="food-r1-think-then-lead-in"),
    pytest.param("<think>The plate has pasta, tomato sauce, and what looks like ground beef. I should list",
                 [], id="food-r1-unfinished-think"),
    pytest.param("<think>Pancakes, berries.</think>\n**Ingredients:**\n1. Pancakes\n2. Blueberries\n"
                 "3. Maple syrup",
                 ["pancake", "blueberry", "maple syrup"], id="food-r1-think-then-markdown"),
    pytest.param("Final answer: salmon, asparagus, lemon", ["salmon", "asparagus", "lemon"], id="final-answer-label"),
    # ---- terse lists
    pytest.param("rice, egg, carrot", ["rice", "egg", "carrot"], id="trained-format"),
    pytest.param("chicken breast, white rice, soy sauce, olive oil",
                 ["chicken breast", "white rice", "soy sauce", "olive oil"], id="trained-format-multiword"),
    pytest.param("Rice, Eggs, Carrots.", ["rice", "egg", "carrot"], id="terse-capitalised"),
    pytest.param("rice\negg\ncarrot", ["rice", "egg", "carrot"], id="terse-lines"),
    pytest.param("rice; egg; carrot; etc.", ["rice", "egg", "carrot"], id="terse-semicolons-etc"),
    pytest.param("1 can of tuna, 2 slices of bread, mayonnaise", ["tuna", "bread", "mayonnaise"],
                 id="terse-quantities"),
    pytest.param("Pancakes topped with blueberries and maple syrup, with a side of bacon.",
                 ["pancake", "blueberry", "maple syrup", "bacon"], id="terse-topped-with"),
    pytest.param("Chicken tikka masala: chicken, tomato, cream, garam masala",
                 ["chicken", "tomato", "cream", "garam masala"], id="dish-name-label"),
    pytest.param("rice, rice, egg, Rice", ["rice", "egg"], id="repeats-once"),
    pytest.param("I'm sorry, I cannot determine the ingredients from this image.", [], id="refusal"),
]


@pytest.mark.parametrize("text, expected", INGREDIENT_ANSWERS)
def test_ingredients_of_real_answers(text, expected):
    assert parse_ingredients(text) == expected


def nutrition(mass=None, energy=None, fat=None, carbohydrate=None, protein=None) -> dict[str, float | None]:
    return {"mass_g": mass, "energy_kcal": energy, "fat_g": fat, "carbohydrate_g": carbohydrate, "protein_g": protein}


NUTRITION_ANSWERS = [
    pytest.param("Based on the image, here is an estimate of the nutritional content:\n\n1. **Total weight**: "
                 "approximately 350 grams\n2. **Calories**: around 450-500 kcal\n3. **Fat**: 15-20 g\n"
                 "4. **Carbohydrates**: 55 g\n5. **Protein**: 25 g\n\nPlease note these are rough estimates.",
                 nutrition(350, (450 + 500) / 2, (15 + 20) / 2, 55, 25), id="llava-numbered-bold-ranges"),
    pytest.param("The dish weighs about 350 grams and contains approximately 450 calories, 12 g of fat, 60 g of "
                 "carbs and 20 g of protein.",
                 nutrition(350, 450, 12, 60, 20), id="llava-prose"),
    pytest.param("Here is a rough estimate:\n\n| Nutrient | Amount |\n|---|---|\n| Calories | 450 kcal |\n"
                 "| Fat | 12 g |\n| Carbohydrates | 60 g |\n| Protein | 20 g |\n\nActual values may vary.",
                 nutrition(None, 450, 12, 60, 20), id="llava-table"),
    pytest.param("| Calories | Fat | Carbs | Protein |\n|---|---|---|---|\n| 450 kcal | 12 g | 60 g | 20 g |",
                 nutrition(None, 450, 12, 60, 20), id="table-fields-as-columns"),
    pytest.param("### Nutrition (per serving)\n- **Calories:** 520\n- **Protein:** 25 g\n- **Fat:** 18 g\n"
                 "- **Carbohydrates:** 60 g",
                 nutrition(None, 520, 18, 60, 25), id="heading-bold-bullets"),
    pytest.param("mass: 348 g, energy: 440 kcal, fat: 11 g, carbohydrate: 64 g, protein: 18 g",
                 nutrition(348, 440, 11, 64, 18), id="trained-format"),
    pytest.param("mass: 348 g, energy: 440 kcal, fat: 11 g, protein: 18 g",
                 nutrition(348, 440, 11, None, 18), id="trained-format-without-carbohydrate"),
    pytest.param("<think>Rice ~200 g is 260 kcal, the egg adds 90 kcal and 7 g fat, so about 350 kcal.</think>\n"
                 "mass: 300 g, energy: 350 kcal, fat: 8 g, carbohydrate: 50 g, protein: 14 g",
                 nutrition(300, 350, 8, 50, 14), id="food-r1-think-then-answer"),
    pytest.param("<think>Roughly 600 kcal.</think><answer>Energy: 650 kcal; Protein: 30 g</answer>",
                 nutrition(energy=650, protein=30), id="food-r1-answer-tag"),
    pytest.param("I'm unable to estimate the nutrition accurately from an image.", nutrition(), id="refusal"),
]


@pytest.mark.parametrize("text, expected", NUTRITION_ANSWERS)
def test_nutrition_of_real_answers(text, expected):
    parsed = parse_nutrition(text)
    assert set(parsed) == set(expected)
    for field, value in expected.items():
        if value is None:
            assert parsed[field] is None, (field, parsed)
        else:
            assert parsed[field] == pytest.approx(value), (field, parsed)


def test_table_is_large_enough():
    assert len(INGREDIENT_ANSWERS) + len(NUTRITION_ANSWERS) >= 40
