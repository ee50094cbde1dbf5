"""Uni-Food: this project's documented format (README.md, "Data formats"), the paper's multi-task food data."""

from __future__ import annotations

from pathlib import Path

from rode_lightning.conventions import TASKS
from rode_lightning.data.datasets.base import FoodDataset, NoOptions, ReadRequest
from rode_lightning.data.datasets.unifood.demo import generate_demo_unifood
from rode_lightning.data.datasets.unifood.reader import read_unifood_split
from rode_lightning.data.records import FoodRecord


class UniFood(FoodDataset):
    name = "unifood"
    title = "Uni-Food"
    tasks = TASKS
    layout = "annotations/<split>.jsonl and the images they name"

    def read(self, root: Path, options: NoOptions, request: ReadRequest) -> list[FoodRecord]:
        return read_unifood_split(root, request.split, request.on_error, request.skipped,
                                  val_fraction=request.val_fraction)

    def write_demo(self, root: Path, seed: int, sizes: dict[str, int] | None) -> None:
        generate_demo_unifood(root, seed=seed, splits=sizes)
