"""Which datasets the data module can serve, and for each how it is read and how its demo copy is written.

A dataset is served either from a root the user configured (``data.<name>_root``, or a ``data.huggingface`` block)
or, when the user configured no data at all, from a small synthetic copy in the dataset's released layout, written
into the demo directory on first use. Mixing the two is refused: a user who points the tool at their own data must
never train on synthetic dishes they did not ask for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from rode_lightning.conventions import TASKS
from rode_lightning.data.datasets.unifood.demo import generate_demo_unifood
from rode_lightning.data.datasets.food101.demo import generate_demo_food101
from rode_lightning.data.datasets.huggingface.demo import demo_source, generate_demo_huggingface
from rode_lightning.data.datasets.nutrition5k.demo import generate_demo_nutrition5k
from rode_lightning.data.datasets.recipe1m.demo import DEMO_MIN_INGREDIENT_COUNT, generate_demo_recipe1m
from rode_lightning.data.datasets.vireo172.demo import generate_demo_vireo172
from rode_lightning.data.errors import OnError, SkipCounter
from rode_lightning.data.datasets.food101.reader import read_food101_split
from rode_lightning.data.datasets.huggingface.reader import HuggingFaceSource, check_huggingface_source, read_huggingface_split
from rode_lightning.data.datasets.nutrition5k.reader import read_nutrition5k_split
from rode_lightning.data.datasets.recipe1m.reader import read_recipe1m_split
from rode_lightning.data.records import FoodRecord
from rode_lightning.data.datasets.unifood.reader import read_unifood_split
from rode_lightning.data.datasets.vireo172.reader import read_vireo172_split
from rode_lightning.user_errors import MissingFileError, UserError

log = logging.getLogger(__name__)

ReadSplit = Callable[[Path, str, OnError, SkipCounter, float, bool], list[FoodRecord]]
"""``(root, split, on_error, skipped, val_fraction, demo) -> records``; ``demo``: the root is a generated copy."""


@dataclass(frozen=True)
class DatasetKind:
    """One released layout: its reader, its demo generator and the tasks its labels can serve."""

    name: str
    title: str  # as people write it, for messages
    tasks: tuple[str, ...]
    read: ReadSplit
    write_demo: Callable[[Path, int, dict[str, int] | None], Path]  # (root, seed, sizes per split) -> root

    @property
    def root_key(self) -> str:
        return f"data.{self.name}_root"


def _read_unifood(root: Path, split: str, on_error: OnError, skipped: SkipCounter,
                  val_fraction: float, demo: bool) -> list[FoodRecord]:
    return read_unifood_split(root, split, on_error, skipped, val_fraction=val_fraction)


def _read_nutrition5k(root: Path, split: str, on_error: OnError, skipped: SkipCounter,
                      val_fraction: float, demo: bool) -> list[FoodRecord]:
    return read_nutrition5k_split(root, split, on_error, skipped, val_fraction=val_fraction)


def _read_recipe1m(root: Path, split: str, on_error: OnError, skipped: SkipCounter,
                   val_fraction: float, demo: bool) -> list[FoodRecord]:
    # The demo's few hundred recipes would lose real ingredients to InverseCooking's count threshold of 10.
    counts = {"min_ingredient_count": DEMO_MIN_INGREDIENT_COUNT} if demo else {}
    return read_recipe1m_split(root, split, on_error, skipped, **counts)


def _read_food101(root: Path, split: str, on_error: OnError, skipped: SkipCounter,
                  val_fraction: float, demo: bool) -> list[FoodRecord]:
    return read_food101_split(root, split, on_error, skipped, val_fraction=val_fraction)


def _read_vireo172(root: Path, split: str, on_error: OnError, skipped: SkipCounter,
                   val_fraction: float, demo: bool) -> list[FoodRecord]:
    return read_vireo172_split(root, split, on_error, skipped)


# Demo generators: ``sizes`` None gives each generator's own default sizes.

def _demo_unifood(root: Path, seed: int, sizes: dict[str, int] | None) -> Path:
    return generate_demo_unifood(root, seed=seed, splits=sizes)


def _demo_nutrition5k(root: Path, seed: int, sizes: dict[str, int] | None) -> Path:
    return generate_demo_nutrition5k(root, seed=seed, sizes=sizes)


def _demo_recipe1m(root: Path, seed: int, sizes: dict[str, int] | None) -> Path:
    return generate_demo_recipe1m(root, seed=seed, sizes=sizes)


def _demo_food101(root: Path, seed: int, sizes: dict[str, int] | None) -> Path:
    return generate_demo_food101(root, seed=seed, sizes=sizes)


def _demo_vireo172(root: Path, seed: int, sizes: dict[str, int] | None) -> Path:
    return generate_demo_vireo172(root, seed=seed, sizes=sizes)


KINDS: dict[str, DatasetKind] = {kind.name: kind for kind in (
    DatasetKind("unifood", "Uni-Food", ("category", "ingredients", "recipe", "nutrition"), _read_unifood,
                _demo_unifood),
    DatasetKind("nutrition5k", "Nutrition5k", ("ingredients", "nutrition"), _read_nutrition5k, _demo_nutrition5k),
    DatasetKind("recipe1m", "Recipe1M", ("category", "ingredients", "recipe", "nutrition"), _read_recipe1m,
                _demo_recipe1m),
    DatasetKind("food101", "Food-101", ("category",), _read_food101, _demo_food101),
    DatasetKind("vireo172", "VIREO Food-172", ("category", "ingredients"), _read_vireo172, _demo_vireo172),
)}
"""The released layouts, by the name used in ``data.datasets``, results and sampling weights. Local Hugging Face
datasets (``data.huggingface``) are served under the names their blocks give."""

HUGGINGFACE = "huggingface"
"""The name of the demo Hugging Face dataset, and the default name of a ``data.huggingface`` block."""

DEMO_DATASETS: tuple[str, ...] = ("unifood", "nutrition5k")
"""What is served when no data is configured at all (``configs/demo.yaml``)."""


@dataclass(frozen=True)
class ServedDataset:
    """A dataset as the data module serves it: its name, where it is read from, and whether that is a demo copy."""

    name: str
    root: Path
    demo: bool
    tasks: tuple[str, ...]
    kind: DatasetKind | None = None  # None for a Hugging Face dataset
    huggingface: HuggingFaceSource | None = None
    config_key: str = "data.huggingface"  # where the configuration holds it, for messages

    def read(self, split: str, on_error: OnError, skipped: SkipCounter, val_fraction: float) -> list[FoodRecord]:
        if self.huggingface is not None:
            return read_huggingface_split(self.huggingface, split, on_error, skipped, val_fraction=val_fraction,
                                          key=self.config_key)
        return self.kind.read(self.root, split, on_error, skipped, val_fraction, self.demo)

    def write_demo(self, seed: int, sizes: dict[str, int] | None) -> None:
        if self.huggingface is not None:
            generate_demo_huggingface(self.root, seed=seed)
        else:
            self.kind.write_demo(self.root, seed, sizes)


def resolve_served_datasets(datasets: list[str] | None, roots: dict[str, str | None],
                            huggingface: list[HuggingFaceSource], demo_dir: Path) -> dict[str, ServedDataset]:
    """The datasets to serve, by name, from ``data.datasets``, the configured roots and ``data.huggingface``.

    Configured data is served as configured; demo copies only when nothing is configured. Raises ``ValueError``
    with the key to set for a listed dataset that has no data, an unknown name, or two datasets of one name.
    """
    configured: dict[str, ServedDataset] = {}
    for name, root in roots.items():
        if root is not None:
            kind = KINDS[name]
            if not Path(root).expanduser().is_dir():
                raise MissingFileError(f"{kind.root_key}: {root} does not exist or is not a directory; expected the "
                                       f"{kind.title} folder (README.md, Data)")
            configured[name] = ServedDataset(name, Path(root).expanduser(), False, kind.tasks, kind=kind)
    for index, source in enumerate(huggingface):
        if source.name in configured or source.name in KINDS:
            raise UserError(f"data.huggingface[{index}].name: {source.name!r} is already the name of another "
                            f"served dataset; give each dataset its own name")
        key = f"data.huggingface[{index}]"
        check_huggingface_source(source, key)  # columns and types, before any row is read
        configured[source.name] = ServedDataset(source.name, Path(source.path).expanduser(), False,
                                                huggingface_tasks(source), huggingface=source, config_key=key)
    known = sorted({*KINDS, HUGGINGFACE, *configured})
    if datasets is not None:
        unknown = [name for name in datasets if name not in known]
        if unknown or not datasets:
            raise UserError(f"data.datasets: {unknown or 'empty list'} - expected names among {known}")
        if len(set(datasets)) != len(datasets):
            raise UserError(f"data.datasets: {datasets} names a dataset twice")
    if not configured:
        # Nothing configured: the demo, and say so (the data module's summary marks every demo copy).
        names = list(datasets) if datasets is not None else list(DEMO_DATASETS)
        log.info("no data configured (no data.<dataset>_root, no data.huggingface): serving the demo copies of %s "
                 "generated in %s", ", ".join(names), demo_dir)
        return {name: _demo(name, demo_dir) for name in names}
    if datasets is None:
        return configured
    for name in datasets:
        if name not in configured:
            key = "a data.huggingface block" if name not in KINDS else KINDS[name].root_key
            raise UserError(f"data.datasets lists {name!r}, which has no data: set {key}, or remove {name!r} from "
                            f"data.datasets (demo copies are served only when no data is configured at all)")
    return {name: configured[name] for name in datasets}


def _demo(name: str, demo_dir: Path) -> ServedDataset:
    if name == HUGGINGFACE:
        source = replace(demo_source(demo_dir / HUGGINGFACE), name=HUGGINGFACE)
        return ServedDataset(name, demo_dir / name, True, huggingface_tasks(source), huggingface=source)
    kind = KINDS[name]
    return ServedDataset(name, demo_dir / name, True, kind.tasks, kind=kind)


def huggingface_tasks(source: HuggingFaceSource) -> tuple[str, ...]:
    """The tasks a Hugging Face block's column mapping serves."""
    mapped = {"category": source.category, "ingredients": source.ingredients, "recipe": source.recipe,
              "nutrition": source.nutrition}
    return tuple(task for task in TASKS if mapped[task] or task in (source.conversations or {}))
