"""Turning (dish, task) pairs into token sequences, and batching them.

Each sample becomes ``<s> prompt-with-image-tokens answer </s>``. The labels copy the answer tokens and mask
everything else with -100, so the loss is computed on answers only. For generation the same prompt is also kept
on its own, to be left-padded in the batch (decoder-only generation continues from the right end).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from rode_lightning.conventions import IGNORE_INDEX, IMAGE_PLACEHOLDER
from rode_lightning.data.images import open_image
from rode_lightning.data.prompts import answer_for, build_prompt, question_for
from rode_lightning.data.records import FoodRecord


def encode_prompt(tokenizer: PreTrainedTokenizerBase, question: str, num_image_tokens: int) -> list[int]:
    """Token ids of the conversation up to ``ASSISTANT:``, with one ``<image>`` token per image patch."""
    before, after = build_prompt(question).split(IMAGE_PLACEHOLDER)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return (bos + tokenizer.encode(before, add_special_tokens=False)
            + [tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)] * num_image_tokens
            + tokenizer.encode(after, add_special_tokens=False))


def pad_sequences(sequences: list[list[int]], value: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)``: the sequences padded with ``value`` to the longest, on the left (prompts, which generation
    continues from the right end) or on the right; ``mask`` is 1 on real tokens."""
    length = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), length), value, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(length - len(sequence), length) if left else slice(0, len(sequence))
        ids[row, span] = torch.tensor(sequence, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


@dataclass(frozen=True)
class Sample:
    record: FoodRecord
    task: str
    cluster_id: int = 0  # instruction cluster, used by MoCLE routing


class InstructionDataset(Dataset):
    def __init__(self, samples: list[Sample], tokenizer: PreTrainedTokenizerBase, image_transform,
                 num_image_tokens: int, max_length: int, seed: int = 0):
        self.samples = samples
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def question(self, index: int) -> str:
        sample = self.samples[index]
        return question_for(sample.record, sample.task, self.seed)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        record, task = sample.record, sample.task
        prompt_ids = encode_prompt(self.tokenizer, self.question(index), self.num_image_tokens)
        answer = answer_for(record, task)
        answer_ids = self.tokenizer.encode(" " + answer, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        if len(prompt_ids) >= self.max_length:
            raise ValueError(f"data.max_length: {self.max_length} is too short for the prompt of sample "
                             f"{record.id} ({len(prompt_ids)} tokens including {self.num_image_tokens} image tokens)")
        input_ids = (prompt_ids + answer_ids)[: self.max_length]
        labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[: self.max_length]
        with open_image(record.image) as image:
            pixels = self.image_transform(image.convert("RGB"))
        return {"input_ids": input_ids, "labels": labels, "prompt_ids": prompt_ids, "image": pixels,
                "task": task, "cluster_id": sample.cluster_id, "dataset": record.dataset, "id": record.id, "answer": answer}


class InstructionCollator:
    """Right-pads training sequences and left-pads prompts; attention masks mark real tokens."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict]) -> dict:
        input_ids, attention_mask = pad_sequences([item["input_ids"] for item in items], self.pad_token_id, left=False)
        labels, _ = pad_sequences([item["labels"] for item in items], IGNORE_INDEX, left=False)
        prompt_ids, prompt_mask = pad_sequences([item["prompt_ids"] for item in items], self.pad_token_id, left=True)
        return {
            "input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "prompt_ids": prompt_ids, "prompt_attention_mask": prompt_mask,
            "images": torch.stack([item["image"] for item in items]),
            "cluster_ids": torch.tensor([item["cluster_id"] for item in items], dtype=torch.long),
            "tasks": [item["task"] for item in items], "datasets": [item["dataset"] for item in items],
            "ids": [item["id"] for item in items], "answers": [item["answer"] for item in items],
        }
