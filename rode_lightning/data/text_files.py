"""Reading a dataset's text files: UTF-8, and a file that is not is named as bad input, not a traceback.

Every released layout this package reads stores its lists, labels and JSON as UTF-8 text. A file in another
encoding (a list saved by a Windows editor as cp1252, say) would otherwise raise ``UnicodeDecodeError`` from deep in
a reader, without the file's name; here it is a :class:`~rode_lightning.data.errors.DataFormatError` naming the file
and the first undecodable byte, in both ``on_error`` modes (every record of the file depends on it).
"""

from __future__ import annotations

from pathlib import Path

from rode_lightning.data.errors import DataFormatError


def read_text(path: Path, expected: str = "a text file") -> str:
    """The whole of ``path`` decoded as UTF-8; ``expected`` says what the file should be (``"JSON lines"``)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: not UTF-8 text (byte {error.start}): expected {expected}") from None
