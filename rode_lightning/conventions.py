"""The vocabulary every package shares: task names, nutrition fields, the image placeholder, the ignore index and
the canonical form of an ingredient name.

It sits below ``data``, ``metrics``, ``model`` and ``callbacks`` and imports nothing of the project, so that a
metric can name a nutrition field and the model can find the image token without importing the data side (where
these constants were born and whose modules import the metrics).
"""

from __future__ import annotations

import re

TASKS: tuple[str, ...] = ("category", "ingredients", "recipe", "nutrition")
"""The food tasks, in the order results tables list them."""

CONVERSATION_TASK = "conversation"
"""A conversation of a dataset's own (conversation JSON) not tagged with a food task: free text, trained on every
answer, scored by SacreBLEU and ROUGE-L on its last one."""

SERVED_TASKS: tuple[str, ...] = (*TASKS, CONVERSATION_TASK)
"""Every task a sample can have: what ``data.tasks`` and a source's ``tasks`` may name."""

NUTRITION_FIELDS: tuple[str, ...] = ("mass_g", "energy_kcal", "fat_g", "carbohydrate_g", "protein_g")
"""Dish-level nutrition fields, in the order the paper's tables list them."""

NUTRITION_UNITS: dict[str, tuple[str, str]] = {
    # field -> (label in answers, unit)
    "mass_g": ("mass", "g"),
    "energy_kcal": ("energy", "kcal"),
    "fat_g": ("fat", "g"),
    "carbohydrate_g": ("carbohydrate", "g"),
    "protein_g": ("protein", "g"),
}

SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
"""LLaVA v1's ("vicuna_v1") system prompt: spelled by the LLaVA format (``model/formats/llava.py``), and part of the
text the demo tokenizer is trained on and the demo base's pre-training text must not contain."""

IMAGE_PLACEHOLDER = "<image>"
"""The token the prompt carries where the image goes; the LLaVA format repeats it once per patch (llava-hf's way)."""

IGNORE_INDEX = -100
"""Label of a token the loss skips (prompt, image and padding): PyTorch's ``cross_entropy`` default."""

CLUSTER_WIDTH = 64
"""Width of MoCLE's instruction features from TF-IDF (``data/clusters.py`` keeps at most this many SVD
components), and the width a cluster embedding starts at when built without the data's centroids (it takes the
saved width on loading)."""


def normalize_ingredient(name: str) -> str:
    """Canonical form of an ingredient name, used for targets and predictions alike: lower case, digits and
    punctuation removed, ``&`` read as ``and``, simple plurals folded to the singular (as InverseCooking does)."""
    name = name.lower().replace("&", " and ")
    name = re.sub(r"[^a-z\s]", " ", name)
    words = [_singular(word) for word in name.split()]
    return " ".join(words)


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("oes", "ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word
