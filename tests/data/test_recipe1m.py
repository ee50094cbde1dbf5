"""Recipe1M's own layout: InverseCooking's rules, the four files and their checks, Recipe1M+ nutrition, the demo
copy. What every reader does with bad input (skipping and counting, unreadable images, missing files, non-UTF-8
text, empty splits) is the reader contract's, ``test_reader_contract.py``."""

from __future__ import annotations

import io
import json
import re
from collections import Counter

import pytest
from PIL import Image

from rode_lightning.data.dishes import CATEGORIES, INGREDIENTS, directory_digest
from rode_lightning.data.datasets.recipe1m.demo import DEMO_MIN_INGREDIENT_COUNT, generate_demo_recipe1m
from rode_lightning.data.errors import DataFormatError, SkipCounter
from rode_lightning.data.datasets.recipe1m.inverse_cooking import (RecipeRules, build_vocabulary, ingredient_key,
                                                 instruction_key)
from rode_lightning.conventions import TASKS
from rode_lightning.data.prompts import task_available
from rode_lightning.data.datasets.recipe1m.reader import RECIPE_NUTRITION_LIMITS, read_recipe1m_split, recipe_image

L1, L2, DET, NUT = "layer1.json", "layer2.json", "det_ingrs.json", "recipes_with_nutritional_info.json"
STEPS = ["Beat the eggs well.", "1. Numbered lines are dropped, as InverseCooking does.", "  Cook gently in oil.  ",
         ""]
FILTERED = "recipe1m/train: InverseCooking filter: fewer than 2 vocabulary ingredients"  # t4, in every train read


def jpeg_bytes(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def recipe(recipe_id, partition="train", title="  Tomato  OMELETTE ", steps=STEPS):
    return {"id": recipe_id, "title": title, "ingredients": [{"text": "some line"}],
            "instructions": [{"text": step} for step in steps], "partition": partition,
            "url": f"http://example.com/{recipe_id}"}


def detected(recipe_id, *names):
    """``names``: detected names, valid unless prefixed with "!"."""
    return {"id": recipe_id, "ingredients": [{"text": name.lstrip("!")} for name in names],
            "valid": [not name.startswith("!") for name in names]}


# Train counts: tomatoes 1 + tomato 1 + the base word tomato_sauce 1 -> tomato 3; olive_oil, oil, vegetable_oil ->
# oil 3; eggs 2 + egg 1 -> egg 3; saffron 1 (t4 fails the counting filter: one valid name). From min count 2 to 3,
# oil, egg and tomato stay and saffron goes; at 4 nothing is left.
DETECTIONS = [
    detected("t1", "Tomatoes", "olive oil", "!salt", "2 Eggs"),
    detected("t2", "tomato", "oil", "egg", "saffron"),
    detected("t3", "Vegetable Oil", "eggs"),
    detected("t4", "saffron", "!salt"),
    detected("v1", "tomatoes", "basil", "olive oil"),  # basil: not in train, so no ingredient
    detected("e1", "red onion", "egg"),  # red onion: not in train; one ingredient left, so filtered
    detected("e2", "eggs", "Tomatoes", "oil"),
]
IMAGES = {"t1": ["aaaa1.jpg", "bbbb1.jpg"], "t2": ["cccc2.jpg", "dddd2.jpg"], "t3": ["eeee3.jpg"],
          "t4": ["ffff4.jpg"], "v1": ["gggg5.jpg"], "e1": ["hhhh6.jpg"], "e2": ["iiii7.jpg"]}
NUTRITION = [{"id": "t1", "title": "Omelette", "ingredients": [{"text": "eggs, raw"}] * 3,
              "weight_per_ingr": [100, 50.5, 0.25],
              "nutr_per_ingredient": [{"fat": 1, "nrg": 100, "pro": 10, "sat": 0, "sod": 0, "sug": 0},
                                      {"fat": 50, "nrg": 400, "pro": 0.25, "sat": 0, "sod": 0, "sug": 0},
                                      {"fat": 0.5, "nrg": 2.5, "pro": 0, "sat": 0, "sod": 0, "sug": 0}],
              "partition": "train"}]


def write_release(root, layer1=None, det=None, layer2=None, nutrition=None, absent=()):
    """The tiny release above; every image layer2 lists gets a JPEG, except ``cccc2.jpg`` (t2's first, a dead link)
    and the names in ``absent``."""
    layer1 = [recipe(i) for i in ("t1", "t2", "t3", "t4")] + [recipe("v1", "val")] + \
        [recipe(i, "test") for i in ("e1", "e2")] if layer1 is None else layer1
    det = DETECTIONS if det is None else det
    layer2 = [{"id": i, "images": [{"id": image, "url": "u"} for image in images]} for i, images in IMAGES.items()] \
        if layer2 is None else layer2
    files = {L1: layer1, DET: det, L2: layer2, NUT: NUTRITION if nutrition is None else nutrition}
    for name, data in files.items():
        if data is not False:
            (root / name).write_text(json.dumps(data))
    partitions = {r["id"]: r.get("partition") for r in layer1 if isinstance(r, dict) and "id" in r}
    for entry in layer2:
        images = entry["images"] if isinstance(entry["images"], list) else []
        # Only plain file names: a bad id that is a path must not write outside the tree.
        listed = [image["id"] for image in images if "id" in image and "/" not in image["id"]]
        for image_id in listed:
            if image_id not in ("cccc2.jpg", *absent) and partitions.get(entry["id"]) in ("train", "val", "test"):
                path = recipe_image(root, partitions[entry["id"]], image_id)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg_bytes())
    return root


def read(root, split="train", **kwargs):
    kwargs.setdefault("min_ingredient_count", 2)
    return read_recipe1m_split(root, split, **kwargs)


def names(records):
    return {r.id: [i.name for i in r.ingredients] for r in records}


# --------------------------------------------------------------------------------------------------------------------
# InverseCooking's rules


@pytest.mark.parametrize("text, key", [
    ("Salt & Pepper", "salt_and_pepper"),
    ("2 Eggs, beaten.", "eggs_beaten"),
    ("Mac 'n Cheese!", "mac_and_cheese"),
    ("[50%] cream #1", "cream"),
    ("red  onion?", "red__onion"),  # the script does not collapse spaces
    ("3/4", "/"),  # "/" is not among the removed characters
])
def test_ingredient_key_follows_build_vocab(text, key):
    assert ingredient_key(text) == key


@pytest.mark.parametrize("text, key", [
    ("2. Bake for 20 minutes.", ""),
    ("  Mix #well [gently] & serve  ", "mix well gently and serve"),
    ("   ", ""),
    ("Preheat the oven to 350.", "preheat the oven to 350."),
])
def test_instruction_key_follows_build_vocab(text, key):
    assert instruction_key(text) == key


def test_vocabulary_clusters_merges_plurals_and_applies_the_threshold():
    counts = Counter({"olive_oil": 3, "oil": 2, "tomatoes": 4, "egg": 1, "eggs": 1, "red_onion": 1, "saffron": 1,
                      "vegetable_oil": 1, "": 5})
    vocabulary = build_vocabulary(counts, min_count=2)
    # oil: its own 2 + olive_oil 3 + vegetable_oil 1 (last word); tomato: the base words "tomato" and
    # "tomato_sauce" (first word), 1 each, then tomatoes 4 merged into it; eggs into egg; mushroom_caps into
    # mushroom_cap, two base words of count 1 that reach 2 together.
    assert vocabulary.counts == {"oil": 6, "egg": 2, "tomato": 6, "mushroom_cap": 2}
    assert vocabulary.names == {"oil": "oil", "egg": "egg", "tomato": "tomato", "mushroom_cap": "mushroom cap"}
    assert vocabulary.cluster_of == {"olive_oil": "oil", "oil": "oil", "vegetable_oil": "oil", "egg": "egg",
                                     "eggs": "egg", "tomato": "tomato", "tomato_sauce": "tomato",
                                     "tomatoes": "tomato",
                                     "mushroom_caps": "mushroom_cap", "mushroom_cap": "mushroom_cap"}
    assert vocabulary.ingredient_names(["eggs", "saffron", "olive_oil", "egg", "", "tomatoes"]) == \
        ["egg", "oil", "tomato"]
    assert counts["tomato"] == 0 and "tomato" not in counts  # the caller's counter is left alone
    at_one = build_vocabulary(counts, min_count=1)
    assert {"red onion", "saffron", "chicken breast"} <= set(at_one.names.values())
    assert "" not in at_one.names.values()
    assert set(build_vocabulary(counts, min_count=6).names.values()) == {"oil", "tomato"}  # a count equal to it stays
    assert build_vocabulary(counts, min_count=7).names == {}


def test_a_two_word_cluster_moves_to_its_first_word():
    # "spicy_tomato_sauce": neither "sauce" nor "spicy" is counted, its last two words "tomato_sauce" are, and their
    # first word "tomato" is too, so it joins "tomato" rather than a "tomato_sauce" cluster. "sauce_x" has no
    # counted part and stays on its own.
    vocabulary = build_vocabulary(Counter({"tomato_sauce": 1, "spicy_tomato_sauce": 1, "tomato": 1, "sauce_x": 1}),
                                  min_count=1)
    assert [vocabulary.cluster_of[key] for key in ("tomato_sauce", "spicy_tomato_sauce", "tomato", "sauce_x")] == \
        ["tomato", "tomato", "tomato", "sauce_x"]
    assert vocabulary.counts["tomato"] == 3 and vocabulary.names["sauce_x"] == "sauce x"


@pytest.mark.parametrize("counts, reason", [
    ((1, 5, 50), "fewer than 2 ingredients"),
    ((20, 5, 50), "20 or more ingredients"),
    ((19, 1, 50), "fewer than 2 instructions"),
    ((19, 20, 50), "20 or more instructions"),
    ((2, 2, 19), "fewer than 20 characters of instructions"),
    ((19, 19, 20), None),
])
def test_recipe_filter_bounds_are_inverse_cookings(counts, reason):
    assert RecipeRules().drop_reason(*counts) == reason


def test_rules_refuse_negative_or_non_integer_values(tmp_path):
    with pytest.raises(ValueError, match="min_ingredient_count=-1: expected a whole number >= 0"):
        RecipeRules(min_ingredient_count=-1)
    with pytest.raises(ValueError, match="max_ingredients=2.5"):
        read_recipe1m_split(write_release(tmp_path), "train", max_ingredients=2.5)


# --------------------------------------------------------------------------------------------------------------------
# The tiny release


def test_tiny_release_is_read_with_train_vocabulary_in_every_split(tmp_path):
    write_release(tmp_path)
    skipped = SkipCounter()
    splits = {split: read(tmp_path, split, skipped=skipped) for split in ("train", "val", "test")}
    assert names(splits["train"]) == {"t1": ["tomato", "oil", "egg"], "t2": ["tomato", "oil", "egg"],
                                      "t3": ["oil", "egg"]}
    assert names(splits["val"]) == {"v1": ["tomato", "oil"]}  # basil is not in train
    assert names(splits["test"]) == {"e2": ["egg", "tomato", "oil"]}
    assert skipped == {FILTERED: 1, "recipe1m/test: InverseCooking filter: fewer than 2 vocabulary ingredients": 1}
    t1, t2, t3 = splits["train"]
    assert t1.dataset == "recipe1m" and t1.category == "tomato omelette"
    assert t1.recipe == ("Beat the eggs well.", "Cook gently in oil.")
    assert [i.grams for i in t1.ingredients] == [0.0, 0.0, 0.0]
    assert t1.image == str(tmp_path / "images" / "train" / "a" / "a" / "a" / "a" / "aaaa1.jpg")  # the first listed
    assert t2.image.endswith("/images/train/d/d/d/d/dddd2.jpg")  # the first listed file is missing
    assert t1.nutrition == {"mass_g": 150.75, "energy_kcal": 502.5, "fat_g": 51.5, "protein_g": 10.25}
    assert list(t1.nutrition) == ["mass_g", "energy_kcal", "fat_g", "protein_g"]  # no carbohydrate_g
    assert t2.nutrition is None and t3.nutrition is None
    assert [task for task in TASKS if task_available(t1, task)] == list(TASKS)
    assert [task for task in TASKS if task_available(t2, task)] == ["category", "ingredients", "recipe"]


def test_min_ingredient_count_drops_rare_clusters_and_then_recipes(tmp_path):
    write_release(tmp_path)
    assert names(read(tmp_path, min_ingredient_count=1)) == {
        "t1": ["tomato", "oil", "egg"], "t2": ["tomato", "oil", "egg", "saffron"], "t3": ["oil", "egg"]}
    # At 1, a name counted outside train would stay: basil (val) and red onion (test) are no ingredient all the same.
    assert names(read(tmp_path, "val", min_ingredient_count=1)) == {"v1": ["tomato", "oil"]}
    assert names(read(tmp_path, min_ingredient_count=3)) == {
        "t1": ["tomato", "oil", "egg"], "t2": ["tomato", "oil", "egg"], "t3": ["oil", "egg"]}
    with pytest.raises(DataFormatError, match=rf"{L1}: no usable recipes in split 'val' \(skipped: 1 x recipe1m/val: "
                                              r"InverseCooking filter: fewer than 2 vocabulary ingredients\)"):
        read(tmp_path, "val", min_ingredient_count=4, on_error="skip")
    # InverseCooking's default of 10 leaves this tiny release without any ingredient.
    with pytest.raises(DataFormatError, match="no usable recipes in split 'train'"):
        read_recipe1m_split(tmp_path, "train")


def test_recipe_filters_are_configurable_and_shape_the_vocabulary(tmp_path):
    write_release(tmp_path)
    assert list(names(read(tmp_path, min_ingredients=3))) == ["t1", "t2"]
    # Below 4 valid names only t1 and t3 are counted: "olive_oil" meets no counted "oil", and "eggs" no "egg".
    assert names(read(tmp_path, max_ingredients=4)) == {"t1": ["tomato", "eggs"]}
    with pytest.raises(DataFormatError, match=r"\(skipped: 4 x recipe1m/train: InverseCooking filter: fewer than 3 "
                                              r"instructions\)"):
        read(tmp_path, min_instructions=3, min_ingredients=0, on_error="skip")
    with pytest.raises(DataFormatError, match=r"\(skipped: 2 x recipe1m/test: InverseCooking filter: fewer than 39 "
                                              r"characters of instructions\)"):
        read(tmp_path, "test", min_instruction_chars=39, min_ingredients=0, on_error="skip")
    assert list(names(read(tmp_path, "test", min_instruction_chars=38))) == ["e2"]  # 19 + 19 processed characters


def test_nutrition_file_is_optional(tmp_path):
    write_release(tmp_path, nutrition=False)
    assert [r.nutrition for r in read(tmp_path)] == [None, None, None]


def test_edited_file_is_read_again(tmp_path):
    write_release(tmp_path)
    assert read(tmp_path)[0].category == "tomato omelette"
    layer1 = [recipe("t1", title="Fried Rice")] + json.loads((tmp_path / L1).read_text())[1:]
    (tmp_path / L1).write_text(json.dumps(layer1))
    assert read(tmp_path)[0].category == "fried rice"


def test_bad_train_recipe_does_not_stop_reading_val(tmp_path):
    det = [detected("t3", "oil")] + [d for d in DETECTIONS if d["id"] != "t3"]
    det[0]["valid"] = [True, False]
    write_release(tmp_path, det=det)
    assert names(read(tmp_path, "val")) == {"v1": ["tomato", "oil"]}


# --------------------------------------------------------------------------------------------------------------------
# Bad input, both modes


def layer1_with(t3):
    records = [recipe(i) for i in ("t1", "t2")] + [t3, recipe("t4"), recipe("v1", "val")]
    return records + [recipe(i, "test") for i in ("e1", "e2")]


def without_key(record, key):
    return {k: v for k, v in record.items() if k != key}


def det_with(t3):
    return [t3 if d["id"] == "t3" else d for d in DETECTIONS]


def layer2_with(images):
    return [{"id": i, "images": images if i == "t3" else [{"id": image} for image in ids]}
            for i, ids in IMAGES.items()]


T3 = "record 2, id 't3'"
BAD_T3 = [
    # (case, write_release overrides, file and record the error names, message (it starts with the skip reason))
    ("missing title", {"layer1": layer1_with(without_key(recipe("t3"), "title"))}, f"{L1}: {T3}",
     r"missing field: 'title' is absent, expected a string"),
    ("instructions not a list", {"layer1": layer1_with({**recipe("t3"), "instructions": "Cook."})}, f"{L1}: {T3}",
     r"wrong type: 'instructions' is a string, expected a list"),
    ("instruction text a number", {"layer1": layer1_with({**recipe("t3"), "instructions": [{"text": "Go."},
                                                                                           {"text": 3}]})},
     f"{L1}: {T3}", r"wrong type: instructions\[1\].text is a number, expected a string"),
    ("instruction not an object", {"layer1": layer1_with({**recipe("t3"), "instructions": ["Cook."]})},
     f"{L1}: {T3}", r"wrong type: instructions\[0\] is a string, expected an object with 'text'"),
    ("no detections", {"det": [d for d in DETECTIONS if d["id"] != "t3"]}, f"{L1}: {T3}",
     rf"no detected ingredients: recipe 't3' is in {L1} but not in {DET}"),
    ("valid list too short", {"det": det_with({**detected("t3", "oil", "eggs"), "valid": [True]})}, f"{DET}: {T3}",
     r"misaligned valid list: 'valid' has 1 entries, 'ingredients' 2"),
    ("valid flag not a boolean", {"det": det_with({**detected("t3", "oil", "eggs"), "valid": [1, True]})},
     f"{DET}: {T3}", r"wrong type: valid\[0\] is a number, expected true or false"),
    ("detection without text", {"det": det_with({**detected("t3", "oil"), "ingredients": [{"name": "oil"}]})},
     f"{DET}: {T3}", r"missing field: ingredients\[0\].text is absent, expected a string"),
    ("detections missing", {"det": det_with(without_key(detected("t3", "oil"), "ingredients"))}, f"{DET}: {T3}",
     r"missing field: 'ingredients' is absent, expected a list"),
    ("images not a list", {"layer2": layer2_with({"id": "eeee3.jpg"})}, f"{L2}: {T3}",
     r"wrong type: 'images' is an object, expected a list"),
    ("image id a path", {"layer2": layer2_with([{"id": "../../etc.jpg"}])}, f"{L2}: {T3}",
     r"bad image id: images\[0\].id is '../../etc.jpg', expected a file name"),
    ("image id missing", {"layer2": layer2_with([{"url": "u"}])}, f"{L2}: {T3}",
     r"missing field: images\[0\].id is absent, expected a string"),
]


@pytest.mark.parametrize("overrides, location, message", [case[1:] for case in BAD_T3],
                         ids=[case[0] for case in BAD_T3])
def test_bad_recipe_raises_naming_file_id_and_field(tmp_path, overrides, location, message):
    write_release(tmp_path, **overrides)
    with pytest.raises(DataFormatError, match=rf"{tmp_path}/{location}: {message}"):
        read(tmp_path)


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_recipe_without_image_is_counted_in_both_modes(tmp_path, on_error):
    layer2 = [entry for entry in layer2_with([]) if entry["id"] != "t2"]  # t3 lists none, t2 is not in layer2
    write_release(tmp_path, layer2=layer2, absent=("aaaa1.jpg", "bbbb1.jpg"))  # t1's files are both missing
    skipped = SkipCounter()
    with pytest.raises(DataFormatError, match="no usable recipes in split 'train'"):
        read(tmp_path, on_error=on_error, skipped=skipped)
    assert skipped == {"recipe1m/train: no image in layer2.json (normal in Recipe1M)": 2,
                       "recipe1m/train: no listed image file exists (normal in Recipe1M: dead links)": 1,
                       FILTERED: 1}


def test_recipe_id_listed_twice_in_layer1_makes_both_unusable(tmp_path):
    write_release(tmp_path, layer1=layer1_with(recipe("t3")) + [recipe("t3")])
    with pytest.raises(DataFormatError, match=rf"{L1}: {T3}: duplicate recipe id: 't3' is at .*{L1}: {T3} and "
                                              rf".*{L1}: record 7, id 't3'"):
        read(tmp_path)
    skipped = SkipCounter()
    assert list(names(read(tmp_path, on_error="skip", skipped=skipped))) == ["t1", "t2"]
    assert skipped == {"recipe1m/train: DataFormatError: duplicate recipe id": 2, FILTERED: 1}


@pytest.mark.parametrize("t3, location, message, reason", [
    ({**recipe("t3"), "partition": "dev"}, f"{L1}: {T3}",
     r"bad partition: 'partition' is 'dev', expected one of \['train', 'val', 'test'\]", "bad partition"),
    ("t3", f"{L1}: record 2", "wrong type: the record is a string, expected an object", "wrong type"),
    (without_key(recipe("t3"), "id"), f"{L1}: record 2", "missing field: 'id' is absent, expected a string",
     "missing field"),
    ({**recipe("t3"), "id": ""}, f"{L1}: record 2", "missing field: 'id' is empty, expected a recipe id",
     "missing field"),
])
def test_layer1_record_without_a_split_is_reported_by_every_split(tmp_path, t3, location, message, reason):
    write_release(tmp_path, layer1=layer1_with(t3))
    for split in ("train", "val"):
        with pytest.raises(DataFormatError, match=rf"{location}: {message}"):
            read(tmp_path, split)
    skipped = SkipCounter()
    assert list(names(read(tmp_path, on_error="skip", skipped=skipped))) == ["t1", "t2"]
    assert list(names(read(tmp_path, "val", on_error="skip", skipped=skipped))) == ["v1"]
    assert skipped == {f"recipe1m/train: DataFormatError: {reason}": 1, FILTERED: 1,
                       f"recipe1m/val: DataFormatError: {reason}": 1}


def nutrition_with(**changes):
    entry = json.loads(json.dumps(NUTRITION[0]))
    for key, value in changes.items():
        if re.fullmatch(r"nutr\d_[a-z]+", key):  # nutr2_pro: nutr_per_ingredient[2]["pro"]
            number, nutrient = key[len("nutr"):].split("_")
            if value is None:
                del entry["nutr_per_ingredient"][int(number)][nutrient]
            else:
                entry["nutr_per_ingredient"][int(number)][nutrient] = value
        elif value is None:
            del entry[key]
        else:
            entry[key] = value
    return [entry]


BAD_NUTRITION = [
    ("negative weight", nutrition_with(weight_per_ingr=[100, -5, 0.25]),
     r"bad nutrition value: weight_per_ingr\[1\] is -5, expected a finite number >= 0", "bad nutrition value"),
    ("non-finite fat", nutrition_with(nutr0_fat=float("nan")),
     r"bad nutrition value: nutr_per_ingredient\[0\].fat is nan", "bad nutrition value"),
    ("mass above the recipe limit", nutrition_with(weight_per_ingr=[60000, 50.5, 0.25]),
     r"bad nutrition value: mass_g \(the sum of weight_per_ingr, a whole recipe\) is 60050.8, expected a number in "
     r"\[0, 50000\]",
     "bad nutrition value"),
    ("energy above the recipe limit", nutrition_with(nutr1_nrg=99_999),
     r"bad nutrition value: energy_kcal \(the sum of nutr_per_ingredient\[\].nrg, a whole recipe\) is 100102, "
     r"expected a number in \[0, 100000\]",
     "bad nutrition value"),
    ("weight a string", nutrition_with(weight_per_ingr=["100", 50.5, 0.25]),
     r"wrong type: weight_per_ingr\[0\] is a string, expected a number", "wrong type"),
    ("protein missing", nutrition_with(nutr2_pro=None),
     r"missing field: nutr_per_ingredient\[2\].pro is absent, expected a number", "missing field"),
    ("weights missing", nutrition_with(weight_per_ingr=None),
     r"missing field: 'weight_per_ingr' is absent, expected a list", "missing field"),
    ("misaligned", nutrition_with(weight_per_ingr=[100, 50.5]),
     r"misaligned nutrition: 'weight_per_ingr' has 2 entries, 'nutr_per_ingredient' 3", "misaligned nutrition"),
    ("no ingredients", nutrition_with(weight_per_ingr=[], nutr_per_ingredient=[]),
     r"no ingredients: 'weight_per_ingr' is empty", "no ingredients"),
    ("listed twice", nutrition_with() * 2, rf"duplicate recipe id: 't1' is at .*{NUT}: record 0, id 't1' and "
                                           rf".*{NUT}: record 1, id 't1'", "duplicate recipe id"),
]


@pytest.mark.parametrize("nutrition, message", [case[1:3] for case in BAD_NUTRITION],
                         ids=[case[0] for case in BAD_NUTRITION])
def test_bad_nutrition_raises_naming_file_id_and_field(tmp_path, nutrition, message):
    write_release(tmp_path, nutrition=nutrition)
    with pytest.raises(DataFormatError, match=rf"{tmp_path}/{NUT}: record 0, id 't1': {message}"):
        read(tmp_path)


@pytest.mark.parametrize("nutrition, reason", [(case[1], case[3]) for case in BAD_NUTRITION],
                         ids=[case[0] for case in BAD_NUTRITION])
def test_bad_nutrition_serves_the_recipe_without_it_and_counts_why(tmp_path, nutrition, reason):
    write_release(tmp_path, nutrition=nutrition)
    skipped = SkipCounter()
    records = read(tmp_path, on_error="skip", skipped=skipped)
    assert [(r.id, r.nutrition) for r in records] == [("t1", None), ("t2", None), ("t3", None)]
    assert names(records)["t1"] == ["tomato", "oil", "egg"]
    assert skipped == {f"recipe1m/train: DataFormatError: {reason} (served without nutrition)": 1, FILTERED: 1}


def test_recipe_limits_are_ten_dishes():
    assert RECIPE_NUTRITION_LIMITS == {"mass_g": 50000, "energy_kcal": 100000, "fat_g": 10000, "protein_g": 10000}


def test_nutrition_entry_without_id_is_logged(tmp_path, caplog):
    write_release(tmp_path, nutrition=[without_key(NUTRITION[0], "id")])
    assert [r.nutrition for r in read(tmp_path)] == [None, None, None]
    assert f"1 record(s) without a usable id in {NUT} belong to no recipe" in caplog.text
    assert f"{NUT}: record 0: missing field: 'id' is absent" in caplog.text


@pytest.mark.parametrize("name", [L1, L2, DET, NUT])
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_malformed_json_names_file_line_and_column(tmp_path, name, on_error):
    write_release(tmp_path)
    (tmp_path / name).write_text('[{"id": "t1",\n  "title": }]')
    with pytest.raises(DataFormatError, match=rf"{tmp_path}/{name}:2:12: malformed JSON: Expecting value"):
        read(tmp_path, on_error=on_error)


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_file_that_is_not_a_list_is_named(tmp_path, on_error):
    write_release(tmp_path)
    (tmp_path / L2).write_text('{"id": "t1"}')
    with pytest.raises(DataFormatError, match=rf"{L2}: expected a JSON list of recipes, found an object"):
        read(tmp_path, on_error=on_error)


# --------------------------------------------------------------------------------------------------------------------
# The demo copy


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate_demo_recipe1m(tmp_path_factory.mktemp("demo_recipe1m"), seed=0, image_size=32)


def demo_json(root, name):
    return {entry["id"]: entry for entry in json.loads((root / name).read_text())}


def test_demo_is_read_back_with_its_counts_and_skips(demo):
    skipped = SkipCounter()
    splits = {split: read_recipe1m_split(demo, split, skipped=skipped, min_ingredient_count=DEMO_MIN_INGREDIENT_COUNT)
              for split in ("train", "val", "test")}
    assert {split: len(records) for split, records in splits.items()} == {"train": 96, "val": 24, "test": 24}
    assert skipped == {f"recipe1m/{split}: {reason}": 1 for split in ("train", "val", "test") for reason in
                       ("no image in layer2.json (normal in Recipe1M)",
                        "no listed image file exists (normal in Recipe1M: dead links)")}
    layer1, layer2, nutrition = demo_json(demo, L1), demo_json(demo, L2), demo_json(demo, NUT)
    records = [record for records in splits.values() for record in records]
    assert 0.6 < sum(record.id in nutrition for record in records) / len(records) < 0.9
    for split, split_records in splits.items():
        for record in split_records:
            raw = layer1[record.id]
            assert raw["partition"] == split
            assert record.category == raw["title"].lower() and record.category in CATEGORIES
            assert list(record.recipe) == [step["text"] for step in raw["instructions"]]
            # Detected variants ("Tomatoes", "cheddar cheese") fold back into the table names; invalid lines,
            # saffron (once in train) and parsley (never in train) are no ingredient.
            lines = [line["text"].split(" g ", 1)[1] for line in raw["ingredients"] if " g " in line["text"]]
            assert record.ingredient_names == lines and set(lines) <= set(INGREDIENTS)
            assert record.image == str(recipe_image(demo, split, layer2[record.id]["images"][0]["id"]))
            if record.id in nutrition:
                entry = nutrition[record.id]
                assert list(record.nutrition) == ["mass_g", "energy_kcal", "fat_g", "protein_g"]
                assert record.nutrition["mass_g"] == sum(entry["weight_per_ingr"])
                grams = [float(line["text"].split(" g ")[0]) for line in raw["ingredients"] if " g " in line["text"]]
                assert record.nutrition["mass_g"] == sum(grams)
                assert record.nutrition["energy_kcal"] == pytest.approx(sum(
                    grams * INGREDIENTS[name].kcal / 100 for grams, name in
                    zip(entry["weight_per_ingr"], lines)), abs=1e-4)
                assert record.nutrition["protein_g"] == pytest.approx(sum(
                    grams * INGREDIENTS[name].protein / 100 for grams, name in
                    zip(entry["weight_per_ingr"], lines)), abs=1e-4)
                assert [task for task in TASKS if task_available(record, task)] == list(TASKS)
            else:
                assert record.nutrition is None
                assert [task for task in TASKS if task_available(record, task)] == ["category", "ingredients",
                                                                                    "recipe"]
    assert {name for record in splits["train"] for name in record.ingredient_names} == set(INGREDIENTS)


def test_demo_exercises_variants_invalid_lines_and_second_images(demo):
    detections = json.loads((demo / DET).read_text())
    texts = Counter(item["text"] for entry in detections for item, valid in
                    zip(entry["ingredients"], entry["valid"]) if valid)
    invalid = {item["text"] for entry in detections for item, valid in zip(entry["ingredients"], entry["valid"])
               if not valid}
    assert invalid == {"salt", "water", "pepper"}
    assert {"Tomatoes", "eggs", "carrots", "cheddar cheese", "red onion", "chicken breast"} <= set(texts)
    assert texts["saffron"] == 1 and texts["fresh parsley"] == 1
    assert 0 < sum(len(entry["images"]) == 2 for entry in json.loads((demo / L2).read_text()))


def test_demo_keeps_saffron_only_below_its_min_count(demo):
    """Saffron is in one train recipe: DEMO_MIN_INGREDIENT_COUNT (2) drops it, 1 keeps it."""
    at_one = {n for r in read_recipe1m_split(demo, "train", min_ingredient_count=1) for n in r.ingredient_names}
    assert at_one == set(INGREDIENTS) | {"saffron"}


def test_demo_is_deterministic_and_idempotent(tmp_path):
    sizes = {"train": 4, "val": 1, "test": 1}
    first = generate_demo_recipe1m(tmp_path / "a", seed=3, sizes=sizes, image_size=16)
    second = generate_demo_recipe1m(tmp_path / "b", seed=3, sizes=sizes, image_size=16)
    other = generate_demo_recipe1m(tmp_path / "c", seed=4, sizes=sizes, image_size=16)
    assert directory_digest(first) == directory_digest(second) != directory_digest(other)
    before = (first / L1).stat().st_mtime_ns
    generate_demo_recipe1m(first, seed=3, sizes=sizes, image_size=16)
    assert (first / L1).stat().st_mtime_ns == before
    # Other arguments replace the previous demo instead of mixing with it.
    generate_demo_recipe1m(first, seed=3, sizes={"train": 3}, image_size=16, with_nutrition=False, missing_images=0)
    assert not (first / NUT).exists() and sorted(p.name for p in (first / "images").iterdir()) == ["train"]
    records = read_recipe1m_split(first, "train", min_ingredient_count=1)
    assert len(records) == 3 and [r.nutrition for r in records] == [None, None, None]


def test_demo_refuses_to_overwrite_a_directory_it_did_not_write(tmp_path):
    write_release(tmp_path)
    with pytest.raises(FileExistsError, match="not a demo this function wrote"):
        generate_demo_recipe1m(tmp_path, sizes={"train": 1})
    assert json.loads((tmp_path / L1).read_text())[0]["id"] == "t1"


def test_demo_refuses_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="expected non-negative counts"):
        generate_demo_recipe1m(tmp_path, sizes={"dev": 3})
