"""Conversation JSON (LLaVA-Instruct / ShareGPT style): multi-turn conversations about one image each, trained on
every answer; a conversation tagged with a food task is served and scored as that task, the others as free text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rode_lightning.conventions import CONVERSATION_TASK, TASKS
from rode_lightning.data.datasets.base import FoodDataset, ReadRequest
from rode_lightning.data.datasets.conversations.demo import generate_demo_conversations
from rode_lightning.data.datasets.conversations.reader import check_conversation_root, read_conversation_split
from rode_lightning.data.records import FoodRecord


@dataclass(frozen=True)
class ConversationOptions:
    """Where a root's files are, where they differ from the default layout.

    ``files``: split (``train``, ``val``, ``test``) -> its file relative to the root, for files not named
    ``<split>.json`` / ``<split>.jsonl`` (``{train: llava_instruct_150k.json}``); ``image_folder``: the folder under
    the root the ``image`` paths are relative to (LLaVA's ``--image_folder``, e.g. ``coco/train2017``).
    """

    files: dict[str, str] | None = None
    image_folder: str = ""


class Conversations(FoodDataset):
    name = "conversations"
    title = "conversation JSON"
    tasks = TASKS + (CONVERSATION_TASK,)
    options = ConversationOptions
    layout = "<split>.json or <split>.jsonl (train, val, test) and the images they name, relative to the root"

    def check(self, root: Path, options: ConversationOptions, key: str) -> None:
        super().check(root, options, key)
        check_conversation_root(root, options.files, key)

    def read(self, root: Path, options: ConversationOptions, request: ReadRequest) -> list[FoodRecord]:
        return read_conversation_split(root, request.split, request.on_error, request.skipped,
                                       val_fraction=request.val_fraction, files=options.files,
                                       image_folder=options.image_folder, dataset=request.name or self.name)

    def write_demo(self, root: Path, seed: int, sizes: dict[str, int] | None) -> None:
        generate_demo_conversations(root, seed=seed, sizes=sizes)
