"""Reader for conversation JSON: the LLaVA-Instruct / ShareGPT layout that LLaMA-Factory and ms-swift read.

People who already fine-tune vision-language models have their data in this form, so it is read as it is::

    [{"id": "000123", "image": "images/000123.jpg",
      "conversations": [{"from": "human", "value": "<image>\\nWhat dish is this?"},
                        {"from": "gpt", "value": "fried rice"},
                        {"from": "human", "value": "What is in it?"},
                        {"from": "gpt", "value": "rice, egg, carrot"}],
      "task": "ingredients"}, ...]

A root holds ``<split>.json`` (a JSON list) or ``<split>.jsonl`` (one record per line) for ``train``, ``val`` and
``test`` (or the files ``ConversationOptions.files`` names), and the images, relative to the root (or to
``image_folder`` under it). Roles are ``human``/``gpt`` or ``user``/``assistant``, under ``from``/``value`` or
``role``/``content`` (ms-swift's ``messages``); ``images: [one path]`` is read as ``image``. The ``<image>`` of the
first human turn is removed: the conversation formats place the image themselves, once. The optional ``task`` (one of
:data:`~rode_lightning.conventions.TASKS`) says that the last answer answers that food task in its documented format,
so it is scored as that task; other conversations are the free-text task.

A record that cannot be used (no image, a first turn that is not the human's, roles not alternating, an empty turn,
an ``<image>`` after the first turn, a missing or unreadable image, a line that is not UTF-8) is raised naming the
file and the record (``train.json[12]``, ``train.jsonl:13``) or skipped and counted (``on_error``), as every reader
does (:mod:`rode_lightning.data.errors`). Without a ``val`` file, ``val`` is the share of train that
:func:`~rode_lightning.data.splits.is_held_out` picks by image path: all conversations about one image fall on the
same side, so no validation image was trained on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from rode_lightning.conventions import IMAGE_PLACEHOLDER, TASKS
from rode_lightning.data.conversation import Turn
from rode_lightning.data.errors import (DataFormatError, MissingSplitError, OnError, SkipCounter, check_on_error,
                                       report_bad_record)
from rode_lightning.data.images import check_image
from rode_lightning.data.records import FoodRecord
from rode_lightning.data.splits import DEFAULT_VAL_FRACTION, belongs_to, check_fraction, check_split
from rode_lightning.data.text_files import read_text
from rode_lightning.progress import progress
from rode_lightning.user_errors import MissingFileError, UserError

log = logging.getLogger(__name__)

ROLES: dict[str, str] = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
"""Role spellings read (LLaVA's ``human``/``gpt``, the chat APIs' ``user``/``assistant``) -> our roles."""

SUFFIXES: tuple[str, ...] = (".json", ".jsonl")


def split_file(root: Path, split: str, files: dict[str, str] | None) -> Path | None:
    """The file of ``split``: the one ``files`` names, else ``<split>.json`` or ``<split>.jsonl``; ``None`` when
    there is none. Both ``.json`` and ``.jsonl`` present is refused: which one is meant cannot be guessed."""
    if files and split in files:
        path = root / files[split]
        if not path.is_file():
            raise MissingFileError(f"options.files.{split}: {path} does not exist (conversation JSON root {root})")
        return path
    found = [root / f"{split}{suffix}" for suffix in SUFFIXES if (root / f"{split}{suffix}").is_file()]
    if len(found) > 1:
        raise UserError(f"conversation JSON root {root} has both {found[0].name} and {found[1].name}: keep one")
    return found[0] if found else None


def check_conversation_root(root: Path, files: dict[str, str] | None, key: str) -> None:
    """Refuse a root without a train file before anything is read, naming the JSON files it does hold."""
    unknown = sorted(set(files or {}) - {"train", "val", "test"})
    if unknown:
        raise UserError(f"{key}.options.files: unknown split {unknown}; expected some of train, val, test")
    if split_file(root, "train", files) is None:
        expected = (files or {}).get("train") or "train.json or train.jsonl"
        present = sorted(path.name for suffix in SUFFIXES for path in root.glob(f"*{suffix}"))
        hint = f"; it holds {', '.join(present)}: name the train file with {key}.options.files" if present else ""
        raise MissingFileError(f"{key}.root: {root} has no {expected}{hint}")


def read_conversation_split(root: str | Path, split: str, on_error: OnError = "raise",
                            skipped: SkipCounter | None = None, val_fraction: float = DEFAULT_VAL_FRACTION,
                            files: dict[str, str] | None = None, image_folder: str = "",
                            dataset: str = "conversations") -> list[FoodRecord]:
    """The records of ``split``, each one conversation about one image (``FoodRecord.turns``), under ``dataset``.

    Without a ``val`` file, ``val`` is the share ``val_fraction`` of the train file held out by image, and ``train``
    the rest (logged). A missing ``test`` file is a :class:`MissingSplitError`.
    """
    check_on_error(on_error)
    check_split(split, "conversation JSON")
    check_fraction(val_fraction)
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"conversation JSON root {root} does not exist or is not a directory (expected "
                               "train.json or train.jsonl and the images it names)")
    held_out = split in ("train", "val") and split_file(root, "val", files) is None
    path = split_file(root, "train" if held_out else split, files)
    if path is None:
        wanted = "train" if held_out else split
        raise MissingSplitError(f"conversation JSON split {split!r}: {root} has no "
                                f"{(files or {}).get(wanted) or f'{wanted}.json or {wanted}.jsonl'}")
    if held_out and split == "val":
        log.info("%s has no val file: validating on the %.0f%% of %s held out by image (the source's "
                 "val_fraction)", root, 100 * val_fraction, path.name)
    skipped = SkipCounter() if skipped is None else skipped
    image_root = root / image_folder
    records, seen_ids = [], {}
    for location, index, raw in progress(list(_raw_records(path)), f"reading {dataset} {split}", "conversation"):
        if held_out:
            # Placed before it is checked, so a bad record is reported by the split it belongs to (one that names no
            # image, by train), and val's images are not checked again while reading train.
            key = _hold_out_key(raw)
            if split == "val" if key is None else not belongs_to(key, split, val_fraction):
                continue
        try:
            if isinstance(raw, DataFormatError):
                raise raw
            record = parse_conversation_record(raw, image_root, f"{path.stem}-{index}", dataset)
        except DataFormatError as error:
            report_bad_record(error, location, on_error, skipped, f"{dataset}/{split}")
            continue
        # An image with several conversations often repeats its id (LLaVA's data does): each record stays its own.
        seen_ids[record.id] = seen_ids.get(record.id, 0) + 1
        if seen_ids[record.id] > 1:
            record = replace(record, id=f"{record.id}#{seen_ids[record.id]}")
        records.append(record)
    if not records:
        raise DataFormatError(f"{path}: no usable records in split {split!r} (skipped: {skipped.report()})")
    return records


def _hold_out_key(raw) -> str | None:
    """The image path as written, which places a record in train or held-out val; ``None`` without one."""
    try:
        return _image_of(raw) if isinstance(raw, dict) else None
    except DataFormatError:
        return None


def _raw_records(path: Path) -> Iterator[tuple[str, int, dict | DataFormatError]]:
    """``(location, index, raw record or the error that makes it unusable)`` for every record of ``path``: a JSON
    list's items (``file[index]``), or a JSON-lines file's non-empty lines (``file:line``), each decoded on its own so
    that one bad line (malformed, or not UTF-8) is one bad record, skippable."""
    if path.suffix == ".jsonl":
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            if not line.strip():
                continue
            location = f"{path}:{number}"
            try:
                yield location, number, json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as error:
                yield location, number, DataFormatError(f"not UTF-8: byte {error.start} of the line")
            except json.JSONDecodeError as error:
                yield location, number, DataFormatError(f"malformed JSON: {error.msg} at column {error.colno}")
        return
    try:
        items = json.loads(read_text(path, "a JSON list of conversations"))  # one document: the file is named
    except json.JSONDecodeError as error:
        hint = " (one record per line? name the file .jsonl)" if error.msg == "Extra data" else ""
        raise DataFormatError(f"{path}: malformed JSON: {error.msg} at line {error.lineno} column {error.colno}"
                              f"{hint}") from None
    if not isinstance(items, list):
        raise DataFormatError(f"{path}: expected a JSON list of conversations, got {type(items).__name__}")
    for index, item in enumerate(items):
        yield f"{path}[{index}]", index, item


def parse_conversation_record(raw, image_root: Path, default_id: str, dataset: str) -> FoodRecord:
    """One record, checked, its image relative to ``image_root``; ``default_id`` where it has no ``id``."""
    if not isinstance(raw, dict):
        raise DataFormatError(f"malformed record: expected a JSON object, got {type(raw).__name__}")
    record_id = raw.get("id", default_id)
    if isinstance(record_id, bool) or not isinstance(record_id, (str, int)) or record_id == "":
        raise DataFormatError(f"malformed id: expected a non-empty string or an integer, got {record_id!r}")
    image = _image_of(raw)
    task = raw.get("task")
    if task is not None and task not in TASKS:
        raise DataFormatError(f"unknown task: {task!r}, expected one of {', '.join(TASKS)} or none")
    turns = _turns_of(raw.get("conversations", raw.get("messages")))
    path = image_root / image
    check_image(path)  # last: the one check that reads a file
    return FoodRecord(id=str(record_id), image=str(path), dataset=dataset, turns=turns, turns_task=task)


def _image_of(raw: dict) -> str:
    image = raw.get("image")
    if image is None and isinstance(raw.get("images"), list):
        if len(raw["images"]) > 1:
            raise DataFormatError(f"several images: {len(raw['images'])} in 'images'; one image per conversation")
        image = raw["images"][0] if raw["images"] else None
    if not isinstance(image, str) or not image.strip():
        raise DataFormatError(f"no image: 'image' must be a non-empty path string, got {image!r}")
    return image


def _turns_of(messages) -> tuple[Turn, ...]:
    if not isinstance(messages, list) or not messages:
        raise DataFormatError("no conversation: 'conversations' must be a non-empty list of turns")
    turns = []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise DataFormatError(f"malformed turn: turn {number} is not an object")
        spelled = message.get("from", message.get("role"))
        role = ROLES.get(spelled) if isinstance(spelled, str) else None
        if spelled == "system":
            raise DataFormatError(f"system turn: turn {number}; the base model's conversation format writes its own "
                                  "system prompt, so a conversation's own is not used: remove system turns")
        if role is None:
            raise DataFormatError(f"unknown role: turn {number} is {spelled!r}, expected one of {', '.join(ROLES)}")
        expected = "user" if number % 2 else "assistant"
        if role != expected:
            reason = "first turn not human" if number == 1 else "roles not alternating"
            raise DataFormatError(f"{reason}: turn {number} is {spelled!r}, expected "
                                  f"{'the human' if expected == 'user' else 'the assistant'}")
        text = message.get("value", message.get("content"))
        if not isinstance(text, str):
            raise DataFormatError(f"empty turn: turn {number} has no text, got {text!r}")
        if number == 1:
            text = text.replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "")
        elif IMAGE_PLACEHOLDER in text:
            raise DataFormatError(f"misplaced {IMAGE_PLACEHOLDER}: in turn {number}; the one image goes with the "
                                  "first human turn")
        if not text.strip():
            raise DataFormatError(f"empty turn: turn {number} has no text")
        turns.append(Turn(role, text.strip()))
    if turns[-1].role != "assistant":
        raise DataFormatError(f"no final answer: the last turn ({len(turns)}) is the human's")
    return tuple(turns)
