"""An optional ingredient vocabulary of clusters: many names, one ingredient.

InverseCooking scores ingredients after merging names that mean the same thing ("cheddar cheese", "mozzarella" ->
"cheese") into clusters of its vocabulary. Datasets name ingredients differently (Nutrition5k says "olive oil",
a model may say "oil"), so a user can supply such clusters as a JSON file::

    {"cheese": ["cheddar cheese", "mozzarella", "parmesan"], "oil": ["olive oil", "vegetable oil"]}

Every name is first normalised (:func:`normalize_ingredient`), then mapped to its cluster's name as written in the
file; names in no cluster are only normalised. The same mapping is applied to training targets (by the data module) and to both sides of
the IoU, so a model is neither taught nor scored on distinctions the vocabulary erases.
"""

from __future__ import annotations

import json
from pathlib import Path

from rode_lightning.conventions import normalize_ingredient
from rode_lightning.user_errors import MissingFileError, UserError


class IngredientVocabulary:
    def __init__(self, clusters: dict[str, list[str]], source: str = "ingredient vocabulary"):
        self.cluster_of: dict[str, str] = {}
        for cluster, members in clusters.items():
            if not isinstance(cluster, str) or not normalize_ingredient(cluster):
                raise UserError(f"{source}: cluster name {cluster!r} is not an ingredient name")
            if not isinstance(members, list) or not all(isinstance(member, str) for member in members):
                raise UserError(f"{source}: cluster {cluster!r} must map to a list of names, got {members!r}")
            canonical = cluster.strip()  # as the user wrote it: it becomes the training target's wording
            for name in [cluster, *members]:
                key = normalize_ingredient(name)
                if self.cluster_of.get(key, canonical) != canonical:
                    raise UserError(f"{source}: {name!r} is in two clusters, {self.cluster_of[key]!r} and "
                                    f"{canonical!r}")
                self.cluster_of[key] = canonical

    @classmethod
    def from_file(cls, path: str | Path) -> IngredientVocabulary:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"data.ingredient_vocabulary: {path} does not exist")
        try:
            clusters = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: malformed JSON at line {error.lineno}: {error.msg}") from None
        except UnicodeDecodeError as error:
            raise UserError(f"{path}: not UTF-8 text (byte {error.start}): expected a JSON file") from None
        if not isinstance(clusters, dict):
            raise UserError(f"{path}: expected an object mapping cluster names to lists of names")
        return cls(clusters, source=str(path))

    def canonical(self, name: str) -> str:
        """The cluster name of ``name``, or its normalised form when it is in no cluster."""
        normalized = normalize_ingredient(name)
        return self.cluster_of.get(normalized, normalized)

    def __len__(self) -> int:
        return len(set(self.cluster_of.values()))
