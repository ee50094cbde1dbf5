"""Turning (dish, task) pairs into conversations: an image, the task's question and, as reference, its answer; or the
dataset's own multi-turn conversation (``FoodRecord.turns``) for the task it serves.

The data side stops at words: how the conversation becomes token ids and pixels is the base model's conversation
format (``model/formats/``), the data loaders' collate function.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from rode_lightning.data.conversation import Conversation, single_turn
from rode_lightning.data.images import open_image
from rode_lightning.data.prompts import answer_for, question_for, turns_task
from rode_lightning.data.records import FoodRecord


@dataclass(frozen=True)
class Sample:
    record: FoodRecord
    task: str
    cluster_id: int = 0  # instruction cluster, used by MoCLE routing


class InstructionDataset(Dataset):
    """One conversation per (dish, task) sample; the image is decoded here, in the data-loader worker."""

    def __init__(self, samples: list[Sample], seed: int = 0):
        self.samples = samples
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def question(self, index: int) -> str:
        sample = self.samples[index]
        return question_for(sample.record, sample.task, self.seed)

    def __getitem__(self, index: int) -> Conversation:
        sample = self.samples[index]
        record = sample.record
        with open_image(record.image) as image:
            rgb = image.convert("RGB")  # a decoded copy: the file closes here
        metadata = dict(id=record.id, dataset=record.dataset, task=sample.task, cluster_id=sample.cluster_id,
                        image_path=record.image if isinstance(record.image, str) else None)
        if record.turns and sample.task == turns_task(record):
            return Conversation(image=rgb, turns=record.turns, **metadata)  # every answer is trained on
        return single_turn(rgb, self.question(index), answer_for(record, sample.task), **metadata)
