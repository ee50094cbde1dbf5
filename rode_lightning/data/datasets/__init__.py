"""The datasets, one folder each, and the registry that names them.

Adding a dataset is a new folder with a :class:`FoodDataset` subclass (its reader and demo copy beside it) and one
:func:`register_dataset` line below (README.md, "Adding a dataset"); ``data.sources: [{dataset: <name>, ...}]``
then serves it.
"""

from __future__ import annotations

from rode_lightning.data.datasets.base import FoodDataset, NoOptions, ReadRequest
from rode_lightning.data.datasets.conversations import Conversations
from rode_lightning.data.datasets.food101 import Food101
from rode_lightning.data.datasets.huggingface import HuggingFace
from rode_lightning.data.datasets.nutrition5k import Nutrition5k
from rode_lightning.data.datasets.recipe1m import Recipe1M
from rode_lightning.data.datasets.unifood import UniFood
from rode_lightning.data.datasets.vireo172 import Vireo172
from rode_lightning.user_errors import UserError

DATASETS: dict[str, FoodDataset] = {}
"""Every registered dataset by ``data.sources[i].dataset`` name, in registration order."""


def register_dataset(dataset: FoodDataset) -> FoodDataset:
    """Make ``dataset`` servable as ``data.sources: [{dataset: <dataset.name>}]``; a name is registered once."""
    if dataset.name in DATASETS:
        raise ValueError(f"dataset {dataset.name!r} is already registered ({type(DATASETS[dataset.name]).__name__})")
    DATASETS[dataset.name] = dataset
    return dataset


def get_dataset(name: str, key: str = "data.sources") -> FoodDataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"{key}.dataset: {name!r} is not a registered dataset; expected one of "
                        f"{', '.join(DATASETS)}") from None


register_dataset(UniFood())
register_dataset(Nutrition5k())
register_dataset(Recipe1M())
register_dataset(Food101())
register_dataset(Vireo172())
register_dataset(HuggingFace())
register_dataset(Conversations())

__all__ = ["DATASETS", "FoodDataset", "NoOptions", "ReadRequest", "get_dataset", "register_dataset"]
