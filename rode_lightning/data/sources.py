"""Which datasets the data module serves, from where: the ``data.sources`` list.

Each entry names a registered dataset (``data/datasets/``) and where its data is. A source without a ``root`` is
that dataset's demo copy: a small synthetic copy in the dataset's released layout, written into the demo directory
on first use. Mixing the two is refused: a user who points the tool at their own data must never train on synthetic
dishes they did not ask for. With no ``data.sources`` at all, the demo's Uni-Food and Nutrition5k are served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rode_lightning.conventions import SERVED_TASKS
from rode_lightning.data.datasets import FoodDataset, ReadRequest, get_dataset
from rode_lightning.data.errors import OnError, SkipCounter
from rode_lightning.data.records import FoodRecord
from rode_lightning.data.splits import DEFAULT_VAL_FRACTION, check_fraction
from rode_lightning.user_errors import UserError

log = logging.getLogger(__name__)


@dataclass
class DatasetSource:
    """One dataset to serve: an entry of ``data.sources``.

    Args:
        dataset: a registered dataset (``unifood``, ``nutrition5k``, ``recipe1m``, ``food101``, ``vireo172``,
            ``huggingface``, ``conversations``, or one a script registered).
        root: its folder (for ``huggingface``: a ``save_to_disk`` folder, parquet file(s) or a glob).
            ``null``: the dataset's demo copy, generated into ``data.demo_dir``.
        name: the name it is served, reported and weighted under; default: ``dataset``. Two sources of one
            dataset need names of their own.
        weight: its training sampling weight (samples drawn in proportion); ``null`` for every source: one
            shuffled pass per epoch instead of weighted draws.
        task_weights: weights of single tasks of this source (``{recipe: 0.5}``), over ``weight``.
        tasks: which of the tasks its labels serve it is asked about; ``null``: all of them.
        val_fraction: the share of train held out as ``val`` when the dataset has no validation split of its own.
        demo_seed: the seed of its demo copy (a source without ``root``).
        demo_sizes: items per split of its demo copy (``{train: 800, val: 64, test: 64}``); ``null``: the
            dataset's own.
        options: the dataset's own options (Recipe1M's filters, a Hugging Face column mapping; README.md, Data).
    """

    dataset: str
    root: str | None = None
    name: str | None = None
    weight: float | None = None
    task_weights: dict[str, float] | None = None
    tasks: list[str] | None = None
    val_fraction: float = DEFAULT_VAL_FRACTION
    demo_seed: int = 0
    demo_sizes: dict[str, int] | None = None
    options: dict[str, Any] | None = None

    @property
    def served_name(self) -> str:
        return self.name or self.dataset


DEMO_DATASETS: tuple[str, ...] = ("unifood", "nutrition5k")
"""What is served when ``data.sources`` is not set (``configs/demo.yaml``)."""


@dataclass(frozen=True)
class ServedDataset:
    """A source as the data module serves it: its dataset, where it is read from, and whether that is a demo copy."""

    name: str
    dataset: FoodDataset
    root: Path
    demo: bool
    tasks: tuple[str, ...]
    options: Any
    source: DatasetSource
    key: str  # where the configuration holds it, for messages

    def read(self, split: str, on_error: OnError, skipped: SkipCounter) -> list[FoodRecord]:
        request = ReadRequest(split, on_error, skipped, self.source.val_fraction, self.demo, self.key, self.name)
        records = self.dataset.read(self.root, self.options, request)
        if any(record.dataset != self.name for record in records):  # a second source of one dataset
            records = [replace(record, dataset=self.name) for record in records]
        return records

    def write_demo(self) -> None:
        self.dataset.write_demo(self.root, self.source.demo_seed, self.source.demo_sizes or self.dataset.demo_sizes)

    def weight(self, task: str) -> float:
        weights = self.source.task_weights or {}
        return weights.get(task, 1.0 if self.source.weight is None else self.source.weight)


def as_source(value: DatasetSource | dict, key: str) -> DatasetSource:
    """A source given as a mapping (a script's, a test's) checked like the command line's."""
    if isinstance(value, DatasetSource):
        return value
    if not isinstance(value, dict) or "dataset" not in value:
        raise UserError(f"{key}: {value!r} - expected a mapping with at least 'dataset' (and 'root')")
    try:
        return DatasetSource(**value)
    except TypeError as error:
        raise UserError(f"{key}: {error}") from None


def resolve_sources(sources: list[DatasetSource | dict] | None, demo_dir: Path) -> dict[str, ServedDataset]:
    """The datasets to serve, by served name, in configuration order; every mistake named by its key."""
    if sources is None:
        log.info("no data.sources configured: serving the demo copies of %s generated in %s",
                 ", ".join(DEMO_DATASETS), demo_dir)
        sources = [DatasetSource(name) for name in DEMO_DATASETS]
    if not sources:
        raise UserError("data.sources: an empty list; expected at least one source (or null for the demo data)")
    served: dict[str, ServedDataset] = {}
    for index, value in enumerate(sources):
        key = f"data.sources[{index}]"
        entry = serve_source(as_source(value, key), key, demo_dir)
        if entry.name in served:
            raise UserError(f"{key}.name: {entry.name!r} is already served by {served[entry.name].key}; give each "
                            "source its own name")
        served[entry.name] = entry
    demo = [entry.key for entry in served.values() if entry.demo]
    if demo and len(demo) < len(served):
        raise UserError(f"{', '.join(demo)}: no root, so a demo copy, beside sources with data of your own; set its "
                        "root, or remove it (demo copies are served only when no source has a root)")
    return served


def serve_source(source: DatasetSource, key: str, demo_dir: Path) -> ServedDataset:
    """One source checked and resolved: its dataset, root, options and tasks; ``key`` names it in messages."""
    dataset = get_dataset(source.dataset, key)
    if not source.served_name.isidentifier():
        raise UserError(f"{key}.name: {source.served_name!r} - expected a plain identifier (letters, digits, _)")
    check_fraction(source.val_fraction, f"{key}.val_fraction")
    for task, weight in {"weight": source.weight, **(source.task_weights or {})}.items():
        if task != "weight" and task not in SERVED_TASKS:
            raise UserError(f"{key}.task_weights: unknown task {task!r}; expected some of {', '.join(SERVED_TASKS)}")
        if weight is not None and not weight >= 0:
            raise UserError(f"{key}.{'weight' if task == 'weight' else f'task_weights.{task}'}: {weight!r}; "
                            "expected a number >= 0")
    demo = source.root is None
    root = demo_dir / source.served_name if demo else Path(source.root).expanduser()
    options = dataset.demo_options(root) if demo and not source.options else dataset.parse_options(source.options,
                                                                                                 key)
    if not demo:
        dataset.check(root, options, key)
    available = dataset.served_tasks(options)
    tasks = tuple(source.tasks) if source.tasks is not None else available
    unserved = [task for task in tasks if task not in available]
    if unserved or not tasks:
        raise UserError(f"{key}.tasks: {unserved or 'empty list'} - {dataset.title} serves {list(available)}")
    return ServedDataset(source.served_name, dataset, root, demo, tasks, options, source, key)
