"""InverseCooking's ingredient vocabulary and recipe filter for Recipe1M, ported so that its targets can be rebuilt.

Published Recipe1M ingredient scores (Salvador et al., CVPR 2019, and everything compared with it) are computed over
the vocabulary that InverseCooking's ``src/build_vocab.py`` derives from ``det_ingrs.json``: about 1,500 clusters
rather than the ~16,000 raw detected names. Serving the raw names would make the task harder than the one in the
literature and the scores incomparable, so the rules of that script are ported here, with its default values:

1. **Ingredient name** (:func:`ingredient_key`): a detected name whose ``valid`` flag is true is lower-cased, its
   digits are removed, ``&`` and ``'n`` become ``and``, the characters ``% , . # [ ] ! ?`` are removed, the result
   is stripped and its spaces become ``_``.
2. **Instruction** (:func:`instruction_key`): lower-cased, ``&`` and ``'n`` become ``and``, ``# [ ]`` are removed,
   stripped; an empty step or one that starts with a digit (InverseCooking drops ``"1."``-style lines) is left out.
3. **Recipe filter** (:class:`RecipeRules`): a recipe with fewer than 2 ingredients or instructions, 20 or more of
   either, or fewer than 20 characters of kept instruction text is left out. The script applies it twice: when
   counting (the number of valid detected names, repeats included) and when building the dataset (the number of
   distinct vocabulary clusters); both are kept here.
4. **Counts** over the *train* partition only, of the recipes that pass the counting filter; the names of
   :data:`BASE_WORDS` are then added with count 1 where absent ("for better clustering", in the script's words).
5. **Clustering** (``cluster_ingredients``): a multi-word name joins the cluster of its last word, else its first
   word, else its last two words, else its first two, whichever is itself a counted name first ("olive_oil" joins
   "oil"); a two-word cluster moves on to its first (else second) word where that is a counted name.
6. **Plural merging** (``remove_plurals``), after clustering: a cluster ``xes`` merges into ``x`` and ``xs`` into
   ``x`` where that cluster exists; the empty name is deleted.
7. **Threshold**: clusters whose summed count is below ``min_count`` (InverseCooking's ``threshold_ingrs``, 10) are
   dropped, so their names are no ingredient at all. A cluster is named by its shortest member, first on ties, which
   is the name InverseCooking reports (``get_ingrs_vocab``); underscores are shown as spaces.

The port keeps the script's order-dependent details (first-seen order of the counts, a raw name belonging to the
first cluster that lists it), since they decide which names survive. It was checked against build_vocab.py at
facebookresearch/inversecooking commit 5eaea16: the same clusters, members and names on 3,000 random counters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_MIN_INGREDIENT_COUNT = 10
"""InverseCooking's ``threshold_ingrs``: clusters counted fewer times than this in train are dropped."""

# (replacement, characters) in the script's dict order: "and" first, then removal.
_INGREDIENT_REPLACEMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("and", ("&", "'n")), ("", ("%", ",", ".", "#", "[", "]", "!", "?")))
_INSTRUCTION_REPLACEMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (("and", ("&", "'n")), ("", ("#", "[", "]")))

BASE_WORDS: tuple[str, ...] = (
    "peppers", "tomato", "spinach_leaves", "turkey_breast", "lettuce_leaf", "chicken_thighs", "milk_powder",
    "bread_crumbs", "onion_flakes", "red_pepper", "pepper_flakes", "juice_concentrate", "cracker_crumbs", "hot_chili",
    "seasoning_mix", "dill_weed", "pepper_sauce", "sprouts", "cooking_spray", "cheese_blend", "basil_leaves",
    "pineapple_chunks", "marshmallow", "chile_powder", "cheese_blend", "corn_kernels", "tomato_sauce", "chickens",
    "cracker_crust", "lemonade_concentrate", "red_chili", "mushroom_caps", "mushroom_cap", "breaded_chicken",
    "frozen_pineapple", "pineapple_chunks", "seasoning_mix", "seaweed", "onion_flakes", "bouillon_granules",
    "lettuce_leaf", "stuffing_mix", "parsley_flakes", "chicken_breast", "basil_leaves", "baguettes", "green_tea",
    "peanut_butter", "green_onion", "fresh_cilantro", "breaded_chicken", "hot_pepper", "dried_lavender",
    "white_chocolate", "dill_weed", "cake_mix", "cheese_spread", "turkey_breast", "chucken_thighs", "basil_leaves",
    "mandarin_orange", "laurel", "cabbage_head", "pistachio", "cheese_dip", "thyme_leave", "boneless_pork",
    "red_pepper", "onion_dip", "skinless_chicken", "dark_chocolate", "canned_corn", "muffin", "cracker_crust",
    "bread_crumbs", "frozen_broccoli", "philadelphia", "cracker_crust", "chicken_breast",
)
"""Names build_vocab.py adds with count 1 before clustering, verbatim (repeats and the "chucken" typo included)."""


def ingredient_key(text: str) -> str:
    """A detected ingredient name as InverseCooking's vocabulary spells it (``get_ingredient``): "Tomatoes, 2 cans"
    -> ``tomatoes_cans``. May be empty; the empty name is never in the vocabulary."""
    key = "".join(character for character in text.lower() if not character.isdigit())
    for replacement, characters in _INGREDIENT_REPLACEMENTS:
        for character in characters:
            key = key.replace(character, replacement)
    return key.strip().replace(" ", "_")


def instruction_key(text: str) -> str:
    """An instruction as InverseCooking processes it (``get_instruction``); empty when the step is left out (empty,
    or starting with a digit). Its length is what the minimum-characters rule sums."""
    text = text.lower()
    for replacement, characters in _INSTRUCTION_REPLACEMENTS:
        for character in characters:
            text = text.replace(character, replacement)
        text = text.strip()
    return "" if text and text[0].isdigit() else text


@dataclass(frozen=True)
class RecipeRules:
    """InverseCooking's recipe filter and vocabulary threshold (build_vocab.py's arguments and their defaults).

    The maxima are exclusive, as in the script (``>= maxnumingrs`` is dropped): 2 to 19 ingredients and instructions.
    """

    min_ingredient_count: int = DEFAULT_MIN_INGREDIENT_COUNT  # threshold_ingrs
    min_ingredients: int = 2  # minnumingrs
    max_ingredients: int = 20  # maxnumingrs
    min_instructions: int = 2  # minnuminstrs
    max_instructions: int = 20  # maxnuminstrs
    min_instruction_chars: int = 20  # minnumwords (it counts characters, despite the name)

    def __post_init__(self):
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r}: expected a whole number >= 0")

    def drop_reason(self, ingredients: int, instructions: int, instruction_chars: int,
                    noun: str = "ingredients") -> str | None:
        """Why a recipe with these counts is left out, or ``None`` when it is kept."""
        if ingredients < self.min_ingredients:
            return f"fewer than {self.min_ingredients} {noun}"
        if ingredients >= self.max_ingredients:
            return f"{self.max_ingredients} or more {noun}"
        if instructions < self.min_instructions:
            return f"fewer than {self.min_instructions} instructions"
        if instructions >= self.max_instructions:
            return f"{self.max_instructions} or more instructions"
        if instruction_chars < self.min_instruction_chars:
            return f"fewer than {self.min_instruction_chars} characters of instructions"
        return None


@dataclass(frozen=True)
class InverseCookingVocabulary:
    """Which cluster each ingredient key belongs to, and the name each cluster is shown by."""

    cluster_of: dict[str, str]  # ingredient key -> cluster key
    names: dict[str, str]  # cluster key -> shortest member, underscores as spaces
    counts: dict[str, int]  # cluster key -> summed train count

    def ingredient_names(self, keys: Iterable[str]) -> list[str]:
        """The distinct cluster names of a recipe's ingredient keys in first-seen order; keys outside the vocabulary
        are left out (InverseCooking's labels)."""
        names: dict[str, None] = {}
        for key in keys:
            cluster = self.cluster_of.get(key)
            if cluster is not None:
                names.setdefault(self.names[cluster])
        return list(names)


def build_vocabulary(counts: Counter, min_count: int = DEFAULT_MIN_INGREDIENT_COUNT) -> InverseCookingVocabulary:
    """The vocabulary of ingredient keys counted over train (insertion order = first seen, as the script's Counter)."""
    counts = Counter(counts)  # the caller's counts stay as they are
    for word in BASE_WORDS:
        if word not in counts:
            counts[word] = 1
    cluster_counts, members = _cluster_ingredients(counts)
    cluster_counts, members = _remove_plurals(cluster_counts, members)
    cluster_of: dict[str, str] = {}
    names: dict[str, str] = {}
    kept: dict[str, int] = {}
    for cluster, count in cluster_counts.items():
        if count < min_count:
            continue
        # A key already taken by an earlier cluster stays there (the script's Vocabulary.add_word skips it).
        added = [key for key in members[cluster] if key not in cluster_of]
        if not added:
            continue
        for key in added:
            cluster_of[key] = cluster
        names[cluster] = " ".join(min(added, key=len).replace("_", " ").split())
        kept[cluster] = count
    return InverseCookingVocabulary(cluster_of, names, kept)


def _cluster_ingredients(counts: Counter) -> tuple[dict[str, int], dict[str, list[str]]]:
    """build_vocab.py's ``cluster_ingredients``, line for line."""
    cluster_counts: dict[str, int] = {}
    members: dict[str, list[str]] = {}
    for key, count in counts.items():
        words = key.split("_")
        candidates = [words[-1], words[0]]
        if len(words) > 1:
            candidates = [words[-1], words[0], words[-2] + "_" + words[-1], words[0] + "_" + words[1]]
        for candidate in candidates:
            if candidate in counts:
                parts = candidate.split("_")
                if parts[0] in counts:
                    candidate = parts[0]
                elif parts[1] in counts:  # never reached for one word: it is its own first part
                    candidate = parts[1]
                cluster_counts[candidate] = cluster_counts.get(candidate, 0) + count
                members.setdefault(candidate, []).append(key)
                break
        else:
            cluster_counts[key] = count
            members[key] = [key]
    return cluster_counts, members


def _remove_plurals(cluster_counts: dict[str, int], members: dict[str, list[str]]
                    ) -> tuple[dict[str, int], dict[str, list[str]]]:
    """build_vocab.py's ``remove_plurals``: counts are updated while iterating, deletions wait until the end."""
    deleted = []
    for key, count in cluster_counts.items():
        if not key:
            deleted.append(key)
            continue
        merged = False
        if key[-2:] == "es" and key[:-2] in cluster_counts:
            cluster_counts[key[:-2]] += count
            members[key[:-2]].extend(members[key])
            deleted.append(key)
            merged = True
        if key[-1] == "s" and not merged and key[:-1] in cluster_counts:
            cluster_counts[key[:-1]] += count
            members[key[:-1]].extend(members[key])
            deleted.append(key)
    for key in deleted:
        del cluster_counts[key]
        del members[key]
    return cluster_counts, members
