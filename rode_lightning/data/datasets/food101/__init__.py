"""Food-101 as released (Bossard et al., ECCV 2014): 101 dish categories, category labels only."""

from __future__ import annotations

from pathlib import Path

from rode_lightning.data.datasets.base import FoodDataset, NoOptions, ReadRequest
from rode_lightning.data.datasets.food101.demo import generate_demo_food101
from rode_lightning.data.datasets.food101.reader import read_food101_split
from rode_lightning.data.records import FoodRecord


class Food101(FoodDataset):
    name = "food101"
    title = "Food-101"
    tasks = ("category",)
    layout = "images/, meta/"

    def read(self, root: Path, options: NoOptions, request: ReadRequest) -> list[FoodRecord]:
        return read_food101_split(root, request.split, request.on_error, request.skipped,
                                  val_fraction=request.val_fraction)

    def write_demo(self, root: Path, seed: int, sizes: dict[str, int] | None) -> None:
        generate_demo_food101(root, seed=seed, sizes=sizes)
