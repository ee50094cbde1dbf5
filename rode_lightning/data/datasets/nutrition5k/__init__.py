"""Nutrition5k as released (Thames et al., CVPR 2021): overhead photos of cafeteria dishes, weighed ingredients."""

from __future__ import annotations

from pathlib import Path

from rode_lightning.data.datasets.base import FoodDataset, NoOptions, ReadRequest
from rode_lightning.data.datasets.nutrition5k.demo import generate_demo_nutrition5k
from rode_lightning.data.datasets.nutrition5k.reader import read_nutrition5k_split
from rode_lightning.data.records import FoodRecord


class Nutrition5k(FoodDataset):
    name = "nutrition5k"
    title = "Nutrition5k"
    tasks = ("ingredients", "nutrition")
    layout = "metadata/, dish_ids/, imagery/"
    demo_sizes = {"train": 128, "test": 32}  # the release's 4:1 train/test ratio

    def read(self, root: Path, options: NoOptions, request: ReadRequest) -> list[FoodRecord]:
        return read_nutrition5k_split(root, request.split, request.on_error, request.skipped,
                                      val_fraction=request.val_fraction)

    def write_demo(self, root: Path, seed: int, sizes: dict[str, int] | None) -> None:
        generate_demo_nutrition5k(root, seed=seed, sizes=sizes)
