"""Files that are complete or absent: everything the tool writes goes to a temporary file in the same folder, which
then replaces the target in one ``os.replace``.

A run killed mid-write (Ctrl-C, a cluster's preemption, a full disk) therefore leaves the previous good file, never
a truncated one that a later ``test`` or ``--model.adapter_path`` would read as garbage. The temporary file sits in
the target's folder because a rename is atomic only within one file system.

Every file written here also gets the permissions a file created by ``open`` gets, ``0o666`` less the umask
(``0644`` under the usual ``022``), whatever the writer chose: ``safetensors`` creates its files ``0600``, which
would make an adapter or the demo base unreadable to the group that shares a run directory.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it for other threads where the system allows.

    POSIX has no call that only reads the umask: ``os.umask`` sets a new one and returns the old. Linux (4.7 and
    later) shows it read-only in ``/proc/self/status``, read first. Elsewhere it is set to ``0o077`` and back at
    once, under a lock so two threads of this function cannot interleave and leave the wrong one in place; a file
    another thread creates in that instant is then created too private, never too open.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path to write ``path``'s new content to; when the block ends without an error, that file
    (flushed to disk, with the umask's permissions) replaces ``path``. On an error the temporary file is removed and
    ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield partial
        os.chmod(partial, 0o666 & ~current_umask())
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


def save_figure_atomically(figure, path: str | Path, **savefig) -> Path:
    """A matplotlib figure saved to ``path``, complete or absent. The format comes from ``path``'s suffix, which the
    temporary file's name does not end with (matplotlib would otherwise pick its default format)."""
    path = Path(path)
    with replaced_atomically(path) as partial:
        figure.savefig(partial, format=path.suffix.lstrip(".") or "png", **savefig)
    return path
