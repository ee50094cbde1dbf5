"""What both weight readers (``llava_weights.py``, ``open_clip_weights.py``) need from a weight file: an error that
names the file and the tensor, where safetensors and ``torch.load`` name neither."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rode_lightning.messages import first_names
from rode_lightning.user_errors import UserError


def first_tensor_names(names: list[str]) -> str:
    """A few of ``names`` for a message; checkpoints hold hundreds of tensors, so a few more than elsewhere."""
    return first_names(names, limit=8)


@contextmanager
def unreadable_as_error(file: Path, key: str) -> Iterator[None]:
    """A weight file that cannot be read (truncated by an interrupted download or copy, or not a weight file) is
    an error naming the key and the file; safetensors and ``torch.load`` name neither."""
    from pickle import UnpicklingError

    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, UnpicklingError, EOFError, RuntimeError) as error:
        detail = " ".join(str(error).split())[:160]
        raise UserError(f"{key}: {file} is truncated or not a weight file ({type(error).__name__}: {detail}); "
                        "download or copy it again") from None


def check_shape(expected, found, file, name: str, what: str) -> None:
    expected, found = tuple(expected), tuple(found)
    fits = len(expected) == len(found) and all(e in (-1, f) for e, f in zip(expected, found))
    if not fits:
        shown = tuple("any" if e == -1 else e for e in expected)
        raise UserError(f"{file}: tensor {name} has shape {found} but {what} expects {shown}")
