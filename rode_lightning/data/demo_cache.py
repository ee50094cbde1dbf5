"""The demo copies' cache: a generated copy is kept, replaced when its arguments change, and never confused with data
the user owns.

Every demo generator (``data/datasets/<name>/demo.py``) writes a synthetic copy of its dataset into a folder of its
own (``data.demo_dir/<name>``) and is called at every setup, so each one needs the same prologue and epilogue, kept
here so that they cannot drift apart:

* its sizes are checked before anything is written (:func:`check_sizes`);
* a marker file in the root holds the *stamp*, the JSON of the arguments that determine the copy's bytes; with the
  same stamp the copy is current and nothing is written (:attr:`DemoCopy.current`);
* otherwise (other arguments, or the marker's ``incomplete``: a generation killed halfway) the previous copy is
  replaced: only the names this generator writes (its *layout*) are deleted, and only when the marker shows that a
  previous generation wrote them. A root that holds any of those names but no marker is someone else's (a real copy
  of the release, the user's own folder): it is refused with :class:`ExistingFileError`, never wiped;
* the marker says ``incomplete`` while the copy is written and the stamp once it is whole, so an interrupted copy is
  never served as it was left (:meth:`DemoCopy.writing`).

The marker's name and the stamp's JSON (keys sorted) are each generator's own, unchanged since they were written
inline: users' caches stay current.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rode_lightning.user_errors import ExistingFileError, UserError

log = logging.getLogger(__name__)

INCOMPLETE = "incomplete"
"""What the marker holds while a copy is being written: no stamp matches it, so the next call writes it again."""


def check_sizes(sizes: dict[str, int], splits: Sequence[str] | None = None, minimum: int = 0,
                **counts: int) -> None:
    """Refuse item counts a generator cannot write, before anything is written.

    ``sizes`` maps a split to its count; ``splits`` are the split names the layout has (``None``: any name);
    ``minimum`` is the smallest count per split; ``counts`` are further counts of the generator (dishes without an
    image) that must not be negative. The message names every argument checked.
    """
    unknown = splits is not None and bool(set(sizes) - set(splits))
    bad_size = any(isinstance(count, bool) or not isinstance(count, int) or count < minimum
                   for count in sizes.values())
    bad_count = any(isinstance(count, bool) or not isinstance(count, int) or count < 0 for count in counts.values())
    if unknown or bad_size or bad_count or (minimum > 0 and not sizes):
        given = ", ".join([f"sizes={sizes}", *(f"{name}={count}" for name, count in counts.items())])
        expected = "non-negative counts" if minimum <= 0 else f"counts of at least {minimum}"
        scope = f" for splits among {list(splits)}" if splits is not None else " per split"
        raise UserError(f"{given}: expected {expected}{scope}")


@dataclass(frozen=True)
class DemoCopy:
    """One generator's copy in ``root``: whether it is current, and the writing of a new one.

    Args:
        root: the copy's folder.
        marker: the marker file's name in ``root`` (``.demo_food101``).
        stamp: the arguments that determine the copy's bytes; stored as JSON with sorted keys.
        layout: the top-level names in ``root`` the generator writes. Any of them present without the marker means
            the folder is not a demo copy; with the marker, those present are deleted before a new copy is written.
        what: the dataset as people write it (``"Food-101"``), for the log and messages.
        written: for a generator whose earlier copy wrote names that only that copy records (a saved dataset's split
            folders, listed in its ``dataset_dict.json``): ``root -> names`` to delete instead of ``layout``, called
            only once the marker has shown the copy to be a demo's.
    """

    root: Path
    marker: str
    stamp: dict[str, Any]
    layout: tuple[str, ...]
    what: str
    written: Callable[[Path], Iterable[str]] | None = None

    @property
    def marker_path(self) -> Path:
        return self.root / self.marker

    @property
    def stamp_text(self) -> str:
        return json.dumps(self.stamp, sort_keys=True)

    @property
    def current(self) -> bool:
        """Whether ``root`` already holds the finished copy of these arguments (nothing to write)."""
        return self.marker_path.is_file() and self.marker_path.read_text() == self.stamp_text

    @contextmanager
    def writing(self) -> Iterator[Path]:
        """Clear the previous copy (refusing a folder that is not one), claim ``root`` with an ``incomplete``
        marker, yield ``root`` to be written, then stamp it. An exception leaves the ``incomplete`` marker, so the
        next call replaces what was written."""
        self._clear_previous()
        self.marker_path.write_text(INCOMPLETE)
        log.info("generating demo %s data (%s) in %s", self.what,
                 ", ".join(f"{key} {value}" for key, value in self.stamp.items() if key != "version"), self.root)
        yield self.root
        self.marker_path.write_text(self.stamp_text)

    def ensure(self, write: Callable[[], None]) -> Path:
        """``root``, written by ``write`` unless it already holds this copy: every generator's one call."""
        if not self.current:
            with self.writing():
                write()
        return self.root

    def _clear_previous(self) -> None:
        present = [name for name in self.layout if (self.root / name).exists()]
        if not self.marker_path.is_file():
            if present:
                raise ExistingFileError(f"{self.root} holds {present} but no {self.marker} marker: it is not a demo "
                                        f"this function wrote, so it is left alone; choose an empty directory")
            self.root.mkdir(parents=True, exist_ok=True)
            return
        names = present if self.written is None else list(self.written(self.root))
        for name in names:
            path = self.root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
