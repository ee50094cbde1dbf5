"""A user's mistake reported as one line, so that it never looks like a bug of the tool; a bug keeps its traceback.

What counts as a mistake is said where it is found, by its type: :class:`UserError` (a value this package refuses:
the message names the key, file or value and what was expected) and :class:`MissingFileError` (a file or folder the
user named is missing or unreadable), a configuration the parser refuses (jsonargparse's ``ArgumentError`` names the
key and the value), a trainer setting Lightning refuses (``MisconfigurationException``: no GPU, a strategy that
cannot run here), and a ``PermissionError`` (a folder the user named that they cannot write to). :func:`reported_in_one_line` turns each into ``error: <message>`` on stderr and exit status 2;
``RODE_TRACEBACK=1`` shows the traceback instead, for the case where a mistake turns out to be a bug after all.

Anything else, a plain ``ValueError`` or ``OSError`` included, is a bug (a shape error inside torch, an internal
check) and keeps its traceback and exit status 1. So an error a library raises on a user's file (transformers on a
tokenizer folder, safetensors on a truncated file) is caught where the file is read and raised again as a
:class:`UserError` naming the file and the key.

Under DDP each process runs this. When one fails, the others learn it from their collective backend (gloo: the
connection closed by the peer) or are stopped by Lightning (the launching process kills the rest when one exits
with an error, and a failing launcher kills its children); what the survivors print is one line pointing at the
failed process's message, not a traceback of the broken connection.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

TRACEBACK_VARIABLE = "RODE_TRACEBACK"
"""Set it (``RODE_TRACEBACK=1``) to see the full traceback of an error the command line reports in one line."""


class UserError(ValueError):
    """A mistake of the user's, found by this package: a configuration value, a file's content or the data is not
    what is expected. The message names the key, file or value and says what was expected, in one sentence.

    A ``ValueError``, so that code and tests that expect one (the parser trying a key's other types among them)
    treat it as before; only :func:`reported_in_one_line` tells it from a bug's ``ValueError``."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (in the configuration, on the command line, or inside a dataset's release)
    does not exist or is not what its key expects. Still a ``FileNotFoundError`` (an ``OSError``) for its callers."""


class ExistingFileError(UserError, FileExistsError):
    """A folder the user named already holds files this command did not write and will not overwrite. Still a
    ``FileExistsError`` for its callers."""


EXIT_STATUS = 2  # argparse's status for a usage error

# What the collective backends raise in the processes that remain when one process of a distributed run has died
# (gloo; NCCL): a consequence, not a cause. The failed process printed its own error.
_PEER_FAILURES = ("Connection closed by peer", "remote worker crashing", "Connection reset by peer",
                  "NCCL communicator was aborted")


def traceback_wanted() -> bool:
    return os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0")


@contextmanager
def reported_in_one_line() -> Iterator[None]:
    """Run the block; a user's mistake ends it with one ``error:`` line on stderr and ``SystemExit(2)``; any other
    error (a plain ``ValueError`` or ``OSError`` too: a bug) goes on with its traceback."""
    # Imported here: every floor of the package imports this module for UserError, and Lightning takes seconds.
    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        yield
    except ArgumentError as error:
        if traceback_wanted():
            raise
        print(f"error: {argument_message(str(error))} (--help lists every key)", file=sys.stderr)
        raise SystemExit(EXIT_STATUS) from None
    # A PermissionError is the machine's answer to a path the user chose (a log or output folder they cannot write
    # to), wherever in the run it comes: reported like a mistake, not a bug.
    except (UserError, MisconfigurationException, PermissionError) as error:
        if traceback_wanted():
            raise
        print(f"error: {mistake_message(error)} ({TRACEBACK_VARIABLE}=1 shows the traceback)", file=sys.stderr)
        raise SystemExit(EXIT_STATUS) from None
    except RuntimeError as error:
        if traceback_wanted() or not stopped_by_another_process(error):
            raise
        print("error: another process of this distributed run failed (its error is printed above); this process "
              "stopped with it", file=sys.stderr)
        raise SystemExit(1) from None


def stopped_by_another_process(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in _PEER_FAILURES)


def mistake_message(error: BaseException) -> str:
    """The error's message on one line, with what to do added where Lightning's own says too little."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    message = " ".join(str(error).split()) or type(error).__name__
    if message == "No supported gpu backend found!":
        return ("trainer.accelerator asks for a GPU, but PyTorch sees none here (torch.cuda.is_available() is "
                "False); run on a machine with a GPU, or set --trainer.accelerator cpu (or auto)")
    if isinstance(error, MisconfigurationException):
        return f"trainer: {message}"
    return message


_UNION = "Does not validate against any of the Union subtypes"


def argument_message(message: str) -> str:
    """jsonargparse's message on one line. For a value that fits none of a key's types it lists every subtype
    and every subtype's error (for ``trainer.precision``: 30 lines); that becomes the key, the value given and the
    values allowed."""
    message = " ".join(message.split())
    if _UNION not in message:
        return message
    key = re.search(r'Parser key "([^"]+)"', message)
    given = re.search(r"Given value: (.*)$", message)
    allowed: list[str] = []
    subtypes = message.split("Errors:")[0]
    for literal in re.findall(r"Literal\[([^\]]*)\]", subtypes):
        allowed += [value.strip().strip("'\"") for value in literal.split(",")]
    for name in re.findall(r"<class '([\w.]+)'>", subtypes):
        allowed.append("null" if name == "NoneType" else f"a {name}")
    allowed = list(dict.fromkeys(allowed))  # 16 and '16' both appear: once is enough
    if not (key and given and allowed):
        return message
    return f"{key[1]}: {given[1]} is not allowed; expected one of {', '.join(allowed)}"
