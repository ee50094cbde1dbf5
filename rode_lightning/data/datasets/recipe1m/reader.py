"""Reader for Recipe1M (Salvador et al., CVPR 2017) and Recipe1M+'s nutrition file (Marin et al., TPAMI 2019), in
the released layout, so that a downloaded copy works without conversion::

    root/layer1.json        [{"id", "title", "ingredients": [{"text"}], "instructions": [{"text"}], "partition",
                              "url"}, ...]            partition is "train", "val" or "test"
    root/layer2.json        [{"id": recipe id, "images": [{"id": "<image id>.jpg", "url"}]}, ...]
    root/det_ingrs.json     [{"id", "ingredients": [{"text": detected name}], "valid": [bool, ...]}, ...]
    root/images/<partition>/<c0>/<c1>/<c2>/<c3>/<image id>     c0..c3: the image id's first four characters
    root/recipes_with_nutritional_info.json     optional (Recipe1M+, 51,235 recipes): [{"id", "weight_per_ingr":
                              [grams], "nutr_per_ingredient": [{"fat", "nrg", "pro", "sat", "sod", "sug"}], ...}]

Only the fields used are read and checked: layer1's ``id``, ``title``, ``instructions`` and ``partition`` (its
``ingredients`` lines are not needed: det_ingrs holds the detected names), det_ingrs' ``ingredients`` and
``valid``, layer2's ``images[].id``, and the nutrition file's ``weight_per_ingr`` and ``nutr_per_ingredient``.

**What a record holds.** ``id`` is the recipe id; ``category`` the title, lower-cased with its whitespace collapsed,
as the dish name (``None`` for an empty title); ``recipe`` the instruction texts as written, one step each, the
steps InverseCooking keeps (empty steps and those starting with a digit are left out, see :mod:`inverse_cooking`);
``ingredients`` the InverseCooking vocabulary names of the valid detected ingredients, in recipe order, each once,
with ``grams`` 0 (Recipe1M gives no weights that can be matched to the detected names). The vocabulary is built
from the *train* partition whatever split is read, so val and test targets use train's names.

**Image.** One per recipe: the first one layer2 lists whose file exists (InverseCooking uses the first at
evaluation and a random one of them in training). A recipe with no image in layer2, or none of whose listed files
exists, is skipped and counted in both ``on_error`` modes: many Recipe1M image links were dead at release.

**Nutrition** (recipes in the Recipe1M+ file; ``None`` for the others): per whole recipe, ``mass_g`` = sum of
``weight_per_ingr``, ``energy_kcal`` = sum of ``nrg``, ``fat_g`` = sum of ``fat``, ``protein_g`` = sum of ``pro``
(grams and kcal per ingredient, per the im2recipe README). The file has no carbohydrate, so ``carbohydrate_g`` is
absent from the dict: it is neither taught nor scored (:class:`FoodRecord`). A whole recipe serves several people,
so the dish limits of :data:`NUTRITION_LIMITS` do not apply; :data:`RECIPE_NUTRITION_LIMITS` does. A recipe's
nutrition entry that is malformed, negative, non-finite or above those limits is bad input of that recipe's
nutrition: ``raise`` stops with the file, the recipe id and the field; ``skip`` serves the recipe *without*
nutrition (its other tasks are sound) and counts the reason under ``recipe1m/<split>: ... (served without
nutrition)``.

**Checks and skips.** A recipe of the split is checked in this order, the first problem found reported: its layer1
record (missing field, wrong type, id listed twice), its det_ingrs entry (absent, malformed, ``valid`` of another
length than ``ingredients``), its layer2 entry (malformed), the InverseCooking filter (counted, never an error), the
image (none: counted; unreadable: bad record), its nutrition. Bad records follow ``on_error`` (:mod:`errors`).

Why one module of over 400 lines: it reads one release whose four files refer to each other by recipe id, and its
checks (the JSON field readers at the end) name the file, the recipe and the field in Recipe1M's own terms; split,
each part would need the others' private structures (``_Recipe``, ``_Entry``, ``_Release``).
A layer1 record without a usable ``id`` or ``partition`` could belong to any split, so every split reports it. Bad
train recipes are left out of the vocabulary counts, so the vocabulary is the same in both modes and for every
split. A det_ingrs, layer2 or nutrition entry without a usable ``id`` belongs to no recipe; such entries are logged.
Malformed JSON, a file that is not a JSON list, and a missing file stop the read in both modes.

The chosen image is decoded in full (:func:`check_image`, about 1 ms for a Recipe1M JPEG), a few minutes for the
~250,000 train recipes with images. The parsed files are cached per root (keyed by each file's modification time and
size), as a data module reads three splits of one release; for the full release this holds a few GB of Python
objects.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from rode_lightning.data.errors import (DataFormatError, OnError, SkipCounter, check_on_error, report_bad_record,
                                        skip_reason)
from rode_lightning.data.images import check_image
from rode_lightning.data.datasets.recipe1m.inverse_cooking import (DEFAULT_MIN_INGREDIENT_COUNT,
                                                                   InverseCookingVocabulary, RecipeRules,
                                                                   build_vocabulary, ingredient_key, instruction_key)
from rode_lightning.conventions import NUTRITION_FIELDS
from rode_lightning.data.records import FoodRecord, Ingredient
from rode_lightning.data.splits import SPLITS, check_split
from rode_lightning.data.text_files import read_text
from rode_lightning.data.nutrients import NUTRITION_LIMITS, nutrient_value
from rode_lightning.progress import progress
from rode_lightning.user_errors import MissingFileError

log = logging.getLogger(__name__)

LAYER1, LAYER2, DETECTIONS = "layer1.json", "layer2.json", "det_ingrs.json"
NUTRITION_FILE = "recipes_with_nutritional_info.json"
_RELEASE = (f"{LAYER1}, {LAYER2} and {DETECTIONS} at its root and images under images/<partition>/; "
            f"{NUTRITION_FILE} (Recipe1M+) is optional")

RECIPE_NUTRITION_FIELDS: tuple[str, ...] = ("mass_g", "energy_kcal", "fat_g", "protein_g")
"""The fields Recipe1M+ gives, in :data:`NUTRITION_FIELDS` order; it has no carbohydrate."""

RECIPE_NUTRITION_LIMITS: dict[str, float] = {key: 10 * NUTRITION_LIMITS[key] for key in RECIPE_NUTRITION_FIELDS}
"""Whole-recipe limits: ten dishes' worth (50 kg, 100,000 kcal, 10 kg of fat or protein). A recipe serves several
people, often 4 to 8; a total above ten times the largest plausible dish is a parsing slip (a quantity or unit
misread when the weights were estimated), not a big batch. The values are an assumption: the distribution of the
real file's totals was not available to check them against."""

# Our field -> the key of nutr_per_ingredient summed into it (mass comes from weight_per_ingr).
_NUTRIENT_KEYS: dict[str, str] = {"energy_kcal": "nrg", "fat_g": "fat", "protein_g": "pro"}


def recipe_image(root: str | Path, partition: str, image_id: str) -> Path:
    """Where the release keeps an image: ``images/<partition>/`` then the id's first four characters as folders."""
    return Path(root) / "images" / partition / image_id[0] / image_id[1] / image_id[2] / image_id[3] / image_id


def read_recipe1m_split(root: str | Path, split: str, on_error: OnError = "raise",
                        skipped: SkipCounter | None = None,
                        min_ingredient_count: int = DEFAULT_MIN_INGREDIENT_COUNT, min_ingredients: int = 2,
                        max_ingredients: int = 20, min_instructions: int = 2, max_instructions: int = 20,
                        min_instruction_chars: int = 20) -> list[FoodRecord]:
    """The usable recipes of ``split`` (``train``, ``val`` or ``test``: layer1's partition), in layer1 order.

    The counts and limits are InverseCooking's
    (:class:`~rode_lightning.data.datasets.recipe1m.inverse_cooking.RecipeRules`): clusters seen fewer than
    ``min_ingredient_count`` times in train are no ingredient; a recipe is kept with ``min_ingredients`` to
    ``max_ingredients - 1`` vocabulary ingredients and ``min_instructions`` to ``max_instructions - 1`` instructions
    of at least ``min_instruction_chars`` characters in all. Skips are counted in ``skipped`` under
    ``recipe1m/<split>: <reason>``.
    """
    check_on_error(on_error)
    check_split(split, "Recipe1M")
    rules = RecipeRules(min_ingredient_count, min_ingredients, max_ingredients, min_instructions, max_instructions,
                        min_instruction_chars)
    root = Path(root).absolute()
    if not root.is_dir():
        raise MissingFileError(f"Recipe1M root {root} does not exist or is not a directory (the release has "
                               f"{_RELEASE})")
    skipped = SkipCounter() if skipped is None else skipped
    release = _load_release(root, _stamps(root))
    vocabulary = release.vocabulary(rules)
    source = f"recipe1m/{split}"
    layer1 = root / LAYER1

    for location, error in release.unplaced:
        report_bad_record(error, location, on_error, skipped, source)
    recipes = release.partitions.get(split, [])
    if not recipes:
        raise DataFormatError(f"{layer1}: no recipes with partition {split!r}")
    records = []
    for recipe in progress(recipes, f"reading Recipe1M {split}", "recipe"):
        try:
            record = _record_for(recipe, release, vocabulary, rules, root)
        except _RecipeProblem as problem:
            report_bad_record(problem.error, problem.location, on_error, skipped, source)
            continue
        if isinstance(record, str):
            skipped[f"{source}: {record}"] += 1
            continue
        records.append(_with_nutrition(record, release.nutrition.get(recipe.id), on_error, skipped, source))
    if not records:
        raise DataFormatError(f"{layer1}: no usable recipes in split {split!r} (skipped: {skipped.report()})")
    return records


def _with_nutrition(record: FoodRecord, nutrition: _Entry | None, on_error: OnError, skipped: SkipCounter,
                    source: str) -> FoodRecord:
    """``record`` with its Recipe1M+ nutrition; a bad nutrition entry raises, or serves the recipe without it (its
    other tasks are sound) and is counted."""
    if nutrition is None:
        return record
    if nutrition.error is None:
        return replace(record, nutrition=dict(nutrition.value))
    if on_error == "raise":
        raise DataFormatError(f"{nutrition.location}: {nutrition.error}")
    skipped[f"{source}: DataFormatError: {skip_reason(nutrition.error)} (served without nutrition)"] += 1
    return record


class _RecipeProblem(Exception):
    """Why a recipe cannot be used, and where to point (kept apart from the message so skips group by reason)."""

    def __init__(self, location: str, error: DataFormatError):
        super().__init__(location, error)
        self.location, self.error = location, error


@dataclass(frozen=True)
class _Recipe:
    """A layer1 record: parsed, or the error that makes it unusable."""

    id: str
    location: str  # "file: record N, id '...'", for messages
    partition: str
    category: str | None = None
    steps: tuple[str, ...] = ()  # the instructions InverseCooking keeps, as written
    step_chars: int = 0  # their processed length, which the minimum-characters rule sums
    error: DataFormatError | None = None


@dataclass(frozen=True)
class _Entry:
    """A det_ingrs, layer2 or nutrition entry of one recipe: its parsed value, or the error that makes it unusable."""

    location: str
    value: object = None  # ingredient keys, image ids, or a nutrition dict
    error: DataFormatError | None = None


@dataclass
class _Release:
    partitions: dict[str, list[_Recipe]]
    unplaced: list[tuple[str, DataFormatError]]  # layer1 records no split can claim
    detections: dict[str, _Entry]
    images: dict[str, _Entry]
    nutrition: dict[str, _Entry]
    _vocabularies: dict[RecipeRules, InverseCookingVocabulary] = field(default_factory=dict)

    def vocabulary(self, rules: RecipeRules) -> InverseCookingVocabulary:
        """InverseCooking's vocabulary over the train recipes that are sound and pass the counting filter."""
        if rules not in self._vocabularies:
            counts: Counter = Counter()
            for recipe in self.partitions.get("train", []):
                detected = self.detections.get(recipe.id)
                if recipe.error is not None or detected is None or detected.error is not None:
                    continue
                if rules.drop_reason(len(detected.value), len(recipe.steps), recipe.step_chars) is None:
                    counts.update(detected.value)
            self._vocabularies[rules] = build_vocabulary(counts, rules.min_ingredient_count)
        return self._vocabularies[rules]


def _record_for(recipe: _Recipe, release: _Release, vocabulary: InverseCookingVocabulary, rules: RecipeRules,
                root: Path) -> FoodRecord | str:
    """The record of one recipe without its nutrition, or why it is skipped as normal (filter, no image)."""
    if recipe.error is not None:
        raise _RecipeProblem(recipe.location, recipe.error)
    detected = release.detections.get(recipe.id)
    if detected is None:
        raise _RecipeProblem(recipe.location, DataFormatError(
            f"no detected ingredients: recipe {recipe.id!r} is in {LAYER1} but not in {DETECTIONS}"))
    if detected.error is not None:
        raise _RecipeProblem(detected.location, detected.error)
    listed = release.images.get(recipe.id)
    if listed is not None and listed.error is not None:
        raise _RecipeProblem(listed.location, listed.error)
    names = vocabulary.ingredient_names(detected.value)
    reason = rules.drop_reason(len(names), len(recipe.steps), recipe.step_chars, noun="vocabulary ingredients")
    if reason is not None:
        return f"InverseCooking filter: {reason}"
    if listed is None or not listed.value:
        return f"no image in {LAYER2} (normal in Recipe1M)"
    image = next((path for path in (recipe_image(root, recipe.partition, image_id) for image_id in listed.value)
                  if path.exists()), None)
    if image is None:
        return "no listed image file exists (normal in Recipe1M: dead links)"
    try:
        check_image(image)
    except DataFormatError as error:
        raise _RecipeProblem(listed.location, error) from None
    return FoodRecord(id=recipe.id, image=str(image), dataset="recipe1m", category=recipe.category,
                      ingredients=tuple(Ingredient(name, 0.0) for name in names), recipe=recipe.steps)


# --------------------------------------------------------------------------------------------------------------------
# Files


def _stamps(root: Path) -> tuple:
    """What the cache is keyed by: each file's modification time and size (``None`` for an absent file)."""
    stamps = []
    for name in (LAYER1, LAYER2, DETECTIONS, NUTRITION_FILE):
        path = root / name
        if not path.is_file():
            if name != NUTRITION_FILE:
                raise MissingFileError(f"Recipe1M file {path} does not exist (the release has {_RELEASE})")
            stamps.append(None)
            continue
        stat = path.stat()
        stamps.append((stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


@functools.lru_cache(maxsize=2)
def _load_release(root: Path, stamps: tuple) -> _Release:
    """Every file of the release parsed; ``stamps`` only keys the cache, so an edited file is read again."""
    partitions, unplaced = _read_layer1(root / LAYER1)
    detections = _read_entries(root / DETECTIONS, _parse_detections)
    images = _read_entries(root / LAYER2, _parse_images)
    nutrition_path = root / NUTRITION_FILE
    nutrition = _read_entries(nutrition_path, _parse_nutrition) if stamps[-1] is not None else {}
    if stamps[-1] is None:
        log.info("Recipe1M: no %s in %s, so no recipe has nutrition", NUTRITION_FILE, root)
    return _Release(partitions, unplaced, detections, images, nutrition)


def _read_json_list(path: Path) -> list:
    try:
        data = json.loads(read_text(path, "a JSON file"))
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}:{error.lineno}:{error.colno}: malformed JSON: {error.msg}") from None
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of recipes, found {_type(data)}")
    return data


def _read_layer1(path: Path) -> tuple[dict[str, list[_Recipe]], list[tuple[str, DataFormatError]]]:
    recipes: list[_Recipe] = []
    unplaced: list[tuple[str, DataFormatError]] = []
    first_seen: dict[str, int] = {}  # id -> its index in recipes
    for index, raw in enumerate(_read_json_list(path)):
        try:
            recipe_id = _record_id(raw)
            location = f"{path}: record {index}, id {recipe_id!r}"
            partition = _string(raw, "partition")
            if partition not in SPLITS:
                raise DataFormatError(f"bad partition: 'partition' is {partition!r}, expected one of {list(SPLITS)}")
        except DataFormatError as error:
            unplaced.append((f"{path}: record {index}" + (f", id {raw['id']!r}" if _has_id(raw) else ""), error))
            continue
        recipe = _parse_recipe(raw, recipe_id, location, partition)
        if recipe_id in first_seen:
            first = recipes[first_seen[recipe_id]]
            error = DataFormatError(f"duplicate recipe id: {recipe_id!r} is at {first.location} and {location}")
            recipes[first_seen[recipe_id]] = _Recipe(recipe_id, first.location, first.partition, error=error)
            recipe = _Recipe(recipe_id, location, partition, error=error)
        else:
            first_seen[recipe_id] = len(recipes)
        recipes.append(recipe)
    partitions: dict[str, list[_Recipe]] = {}
    for recipe in recipes:
        partitions.setdefault(recipe.partition, []).append(recipe)
    return partitions, unplaced


def _parse_recipe(raw: dict, recipe_id: str, location: str, partition: str) -> _Recipe:
    try:
        title = _string(raw, "title")
        texts = [_string(step, "text", f"instructions[{number}]")
                 for number, step in enumerate(_list(raw, "instructions"))]
    except DataFormatError as error:
        return _Recipe(recipe_id, location, partition, error=error)
    steps, chars = [], 0
    for text in texts:
        processed = instruction_key(text)
        if processed:
            steps.append(text.strip())
            chars += len(processed)
    category = " ".join(title.lower().split()) or None
    return _Recipe(recipe_id, location, partition, category, tuple(steps), chars)


def _read_entries(path: Path, parse) -> dict[str, _Entry]:
    """A det_ingrs, layer2 or nutrition file by recipe id; an id listed twice makes both entries unusable."""
    entries: dict[str, _Entry] = {}
    orphans: list[str] = []
    for index, raw in enumerate(_read_json_list(path)):
        try:
            recipe_id = _record_id(raw)
        except DataFormatError as error:
            orphans.append(f"{path}: record {index}: {error}")
            continue
        location = f"{path}: record {index}, id {recipe_id!r}"
        if recipe_id in entries:
            error = DataFormatError(f"duplicate recipe id: {recipe_id!r} is at {entries[recipe_id].location} and "
                                    f"{location}")
            entries[recipe_id] = _Entry(entries[recipe_id].location, error=error)
            continue
        try:
            entries[recipe_id] = _Entry(location, parse(raw))
        except DataFormatError as error:
            entries[recipe_id] = _Entry(location, error=error)
    if orphans:
        log.warning("Recipe1M: %d record(s) without a usable id in %s belong to no recipe and were not read, e.g. %s",
                    len(orphans), path.name, orphans[0])
    return entries


def _parse_detections(raw: dict) -> tuple[str, ...]:
    """The ingredient keys of the valid detected names, repeats kept (the counting filter counts them)."""
    detected = _list(raw, "ingredients")
    valid = _list(raw, "valid")
    if len(valid) != len(detected):
        raise DataFormatError(f"misaligned valid list: 'valid' has {len(valid)} entries, 'ingredients' "
                              f"{len(detected)}, expected one flag per ingredient")
    keys = []
    for number, (item, flag) in enumerate(zip(detected, valid)):
        if not isinstance(flag, bool):
            raise DataFormatError(f"wrong type: valid[{number}] is {_type(flag)}, expected true or false")
        if isinstance(item, dict) and not item:
            continue  # InverseCooking skips an empty detection ({}) as no ingredient
        text = _string(item, "text", f"ingredients[{number}]")
        if flag:
            keys.append(ingredient_key(text))
    return tuple(keys)


def _parse_images(raw: dict) -> tuple[str, ...]:
    image_ids = []
    for number, item in enumerate(_list(raw, "images")):
        image_id = _string(item, "id", f"images[{number}]")
        # It becomes a path: four folder levels from its first characters, then the id as the file name.
        if len(image_id) < 4 or "/" in image_id or "\\" in image_id or image_id in ("..", "."):
            raise DataFormatError(f"bad image id: images[{number}].id is {image_id!r}, expected a file name of at "
                                  f"least 4 characters like '3e233001e2.jpg'")
        image_ids.append(image_id)
    return tuple(image_ids)


def _parse_nutrition(raw: dict) -> dict[str, float]:
    """Whole-recipe totals from the per-ingredient values, checked against :data:`RECIPE_NUTRITION_LIMITS`."""
    weights = _list(raw, "weight_per_ingr")
    nutrients = _list(raw, "nutr_per_ingredient")
    if len(weights) != len(nutrients):
        raise DataFormatError(f"misaligned nutrition: 'weight_per_ingr' has {len(weights)} entries, "
                              f"'nutr_per_ingredient' {len(nutrients)}, expected one of each per ingredient")
    if not weights:
        raise DataFormatError("no ingredients: 'weight_per_ingr' is empty, expected grams per ingredient")
    values = {"mass_g": [_amount(weight, f"weight_per_ingr[{number}]") for number, weight in enumerate(weights)]}
    for key, nutrient in _NUTRIENT_KEYS.items():
        values[key] = []
        for number, item in enumerate(nutrients):
            where = f"nutr_per_ingredient[{number}]"
            if not isinstance(item, dict):
                raise DataFormatError(f"wrong type: {where} is {_type(item)}, expected an object")
            if nutrient not in item:
                raise DataFormatError(f"missing field: {where}.{nutrient} is absent, expected a number")
            values[key].append(_amount(item[nutrient], f"{where}.{nutrient}"))
    totals = {}
    for key in RECIPE_NUTRITION_FIELDS:
        source = "weight_per_ingr" if key == "mass_g" else f"nutr_per_ingredient[].{_NUTRIENT_KEYS[key]}"
        totals[key] = nutrient_value(math.fsum(values[key]), f"{key} (the sum of {source}, a whole recipe)",
                                     RECIPE_NUTRITION_LIMITS[key])
    return {key: totals[key] for key in NUTRITION_FIELDS if key in totals}


def _amount(value, where: str) -> float:
    """One ingredient's amount: a JSON number (else a ``wrong type``), finite and not negative; the whole-recipe
    limits apply to the sums."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataFormatError(f"wrong type: {where} is {_type(value)}, expected a number")
    return nutrient_value(value, where, None)


# --------------------------------------------------------------------------------------------------------------------
# Field checks; messages start with "missing field" or "wrong type", the reasons skips are grouped by.


def _has_id(raw) -> bool:
    return isinstance(raw, dict) and isinstance(raw.get("id"), str) and bool(raw["id"])


def _record_id(raw) -> str:
    if not isinstance(raw, dict):
        raise DataFormatError(f"wrong type: the record is {_type(raw)}, expected an object")
    recipe_id = _string(raw, "id")
    if not recipe_id:
        raise DataFormatError("missing field: 'id' is empty, expected a recipe id")
    return recipe_id


def _field(raw, key: str, where: str | None, expected: str):
    name = f"{where}.{key}" if where else repr(key)
    if not isinstance(raw, dict):
        raise DataFormatError(f"wrong type: {where} is {_type(raw)}, expected an object with {key!r}")
    if key not in raw:
        raise DataFormatError(f"missing field: {name} is absent, expected {expected}")
    return raw[key], name


def _string(raw, key: str, where: str | None = None) -> str:
    value, name = _field(raw, key, where, "a string")
    if not isinstance(value, str):
        raise DataFormatError(f"wrong type: {name} is {_type(value)}, expected a string")
    return value


def _list(raw, key: str, where: str | None = None) -> list:
    value, name = _field(raw, key, where, "a list")
    if not isinstance(value, list):
        raise DataFormatError(f"wrong type: {name} is {_type(value)}, expected a list")
    return value


def _type(value) -> str:
    """JSON's name for a value's type with its article, as the file's author would say it ("a string")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), f"a {type(value).__name__}")
