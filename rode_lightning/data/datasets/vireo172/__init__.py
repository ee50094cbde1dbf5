"""VIREO Food-172 as released (Chen and Ngo, ACM MM 2016): 172 Chinese dish categories with ingredient labels."""

from __future__ import annotations

from pathlib import Path

from rode_lightning.data.datasets.base import FoodDataset, NoOptions, ReadRequest
from rode_lightning.data.datasets.vireo172.demo import generate_demo_vireo172
from rode_lightning.data.datasets.vireo172.reader import read_vireo172_split
from rode_lightning.data.records import FoodRecord


class Vireo172(FoodDataset):
    name = "vireo172"
    title = "VIREO Food-172"
    tasks = ("category", "ingredients")
    layout = "ready_chinese_food/, SplitAndIngreLabel/"

    def read(self, root: Path, options: NoOptions, request: ReadRequest) -> list[FoodRecord]:
        return read_vireo172_split(root, request.split, request.on_error, request.skipped)

    def write_demo(self, root: Path, seed: int, sizes: dict[str, int] | None) -> None:
        generate_demo_vireo172(root, seed=seed, sizes=sizes)
