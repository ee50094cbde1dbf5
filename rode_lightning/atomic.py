"""Files that are complete or absent: everything the tool writes goes to a temporary file in the same folder, which
then replaces the target in one ``os.replace``.

A run killed mid-write (Ctrl-C, a cluster's preemption, a full disk) therefore leaves the previous good file, never
a truncated one that a later ``test`` or ``--model.adapter_path`` would read as garbage. The temporary file sits in
the target's folder because a rename is atomic only within one file system.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path to write ``path``'s new content to; when the block ends without an error, that file
    (flushed to disk) replaces ``path``. On an error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield partial
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str) -> Path:
    with replaced_atomically(path) as partial:
        partial.write_text(text)
    return Path(path)


def write_json_atomically(path: str | Path, value, **dumps) -> Path:
    return write_text_atomically(path, json.dumps(value, **dumps) + ("\n" if dumps.get("indent") else ""))
