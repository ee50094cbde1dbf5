"""What a dataset plug-in is: a reader for one released layout, its demo copy, and the tasks its labels serve.

A dataset lives in a folder of its own (``data/datasets/<name>/``: reader, demo generator, plug-in) and is made
selectable by one :func:`~rode_lightning.data.datasets.register_dataset` line; the data module knows datasets only
through this interface. A dataset folder imports the shared data modules (records, errors, images, nutrients,
splits, the demo cache and the dishes), never another dataset's folder.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rode_lightning.data.errors import OnError, SkipCounter
from rode_lightning.data.records import FoodRecord
from rode_lightning.data.splits import DEFAULT_VAL_FRACTION
from rode_lightning.user_errors import MissingFileError, UserError


@dataclass
class ReadRequest:
    """One split to read, and how: the same for every dataset.

    ``key`` names the source in the configuration (``data.sources[1]``) for messages; ``demo`` says the root is a
    generated demo copy (Recipe1M's few hundred demo recipes need a lower ingredient-count threshold).
    """

    split: str
    on_error: OnError = "raise"
    skipped: SkipCounter = field(default_factory=SkipCounter)
    val_fraction: float = DEFAULT_VAL_FRACTION
    demo: bool = False
    key: str = "data.sources"
    name: str | None = None  # the served name (``data.sources[i].name``); None: the dataset's own


@dataclass(frozen=True)
class NoOptions:
    """A dataset whose layout needs no option beyond its root."""


class FoodDataset(ABC):
    """One dataset layout. Subclasses set the class attributes and implement :meth:`read` and :meth:`write_demo`.

    Attributes:
        name: the registered name (``data.sources[i].dataset``), also the default served name.
        title: the name as people write it, for messages (``"Nutrition5k"``).
        tasks: the tasks its labels can serve.
        options: the dataclass of its own options (``data.sources[i].options``), checked against its fields.
        layout: what its root holds, for the message when the root is missing.
        demo_sizes: items per split of its demo copy when the source gives none (``None``: the generator's own).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    options: ClassVar[type] = NoOptions
    layout: ClassVar[str] = ""
    demo_sizes: ClassVar[dict[str, int] | None] = None

    def parse_options(self, values: dict[str, Any] | None, key: str) -> Any:
        """The typed options from a source's ``options`` mapping; an unknown or mistyped field names the key."""
        fields = {item.name: item for item in dataclasses.fields(self.options)}
        unknown = sorted(set(values or {}) - set(fields))
        if unknown:
            raise UserError(f"{key}.options: {unknown} - {self.title} takes "
                            f"{sorted(fields) if fields else 'no options'}")
        try:
            return self.options(**(values or {}))
        except TypeError as error:  # a required field left out
            raise UserError(f"{key}.options: {error}") from None

    def check(self, root: Path, options: Any, key: str) -> None:
        """Refuse a configured root that cannot be this dataset, before any split is read."""
        if not root.is_dir():
            raise MissingFileError(f"{key}.root: {root} does not exist or is not a directory; expected the "
                                   f"{self.title} folder{f' ({self.layout})' if self.layout else ''}")

    def served_tasks(self, options: Any) -> tuple[str, ...]:
        """The tasks a source of this dataset serves with these options (a column mapping may serve fewer)."""
        return self.tasks

    def demo_options(self, root: Path) -> Any:
        """The options that read the demo copy written into ``root``."""
        return self.options()

    @abstractmethod
    def read(self, root: Path, options: Any, request: ReadRequest) -> list[FoodRecord]:
        """The usable records of ``request.split``, bad ones raised or counted as ``request.on_error`` says.
        A split the dataset does not have raises :class:`~rode_lightning.data.errors.MissingSplitError`."""

    @abstractmethod
    def write_demo(self, root: Path, seed: int, sizes: dict[str, int] | None) -> None:
        """Write the demo copy into ``root`` (idempotent: the demo cache keeps a finished copy), ``sizes`` per split
        (``None``: the generator's own)."""
