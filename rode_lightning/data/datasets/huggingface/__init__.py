"""A local Hugging Face dataset (``save_to_disk`` folders, parquet files), read through a column mapping."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rode_lightning.conventions import TASKS
from rode_lightning.data.datasets.base import FoodDataset, ReadRequest
from rode_lightning.data.datasets.huggingface.demo import demo_source, generate_demo_huggingface
from rode_lightning.data.datasets.huggingface.reader import (HuggingFaceSource, check_huggingface_source,
                                                             read_huggingface_split)
from rode_lightning.data.records import FoodRecord
from rode_lightning.user_errors import UserError


@dataclass(frozen=True)
class HuggingFaceColumns:
    """Which columns hold what; the fields of :class:`~.reader.HuggingFaceSource` but its path and name (the
    source's ``root`` and ``name``). A task is served when its column (or its question/answer columns) is named."""

    image: str = "image"
    id: str | None = None
    splits: dict[str, str] | None = None
    category: str | None = None
    ingredients: str | None = None
    recipe: str | None = None
    nutrition: dict[str, str] | None = None
    conversations: dict[str, dict[str, str]] | None = None


def source_for(root: Path, name: str, columns: HuggingFaceColumns) -> HuggingFaceSource:
    return HuggingFaceSource(path=str(root), name=name, **asdict(columns))


@contextmanager
def keys_of_a_source(key: str):
    """The reader names its path and name as a ``data.huggingface`` block had them (``.path``, ``.name``); in a
    ``data.sources`` entry they are the source's ``root`` and ``name``, and the columns are under ``options``."""
    try:
        yield
    except UserError as error:
        message = str(error).replace(f"{key}.options.path", f"{key}.root").replace(f"{key}.options.name", f"{key}.name")
        raise type(error)(message) from None


class HuggingFace(FoodDataset):
    name = "huggingface"
    title = "Hugging Face dataset"
    tasks = TASKS
    options = HuggingFaceColumns
    layout = "a save_to_disk folder, a folder of parquet files, a parquet file or a glob of them"

    def check(self, root: Path, options: HuggingFaceColumns, key: str) -> None:
        with keys_of_a_source(key):  # columns and types, before any row is read
            check_huggingface_source(source_for(root, self.name, options), f"{key}.options")

    def served_tasks(self, options: HuggingFaceColumns) -> tuple[str, ...]:
        mapped = {"category": options.category, "ingredients": options.ingredients, "recipe": options.recipe,
                  "nutrition": options.nutrition}
        return tuple(task for task in TASKS if mapped[task] or task in (options.conversations or {}))

    def demo_options(self, root: Path) -> HuggingFaceColumns:
        demo = demo_source(root)
        return HuggingFaceColumns(**{item.name: getattr(demo, item.name) for item in fields(HuggingFaceColumns)})

    def read(self, root: Path, options: HuggingFaceColumns, request: ReadRequest) -> list[FoodRecord]:
        with keys_of_a_source(request.key):
            return read_huggingface_split(source_for(root, request.name or self.name, options), request.split,
                                          request.on_error, request.skipped, val_fraction=request.val_fraction,
                                          key=f"{request.key}.options")

    def write_demo(self, root: Path, seed: int, sizes: dict[str, int] | None) -> None:
        generate_demo_huggingface(root, seed=seed, sizes=sizes)
