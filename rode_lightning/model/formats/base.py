"""What every conversation format does: a list of conversations in, one typed batch out.

A format is the collate function of the data loaders, so it runs in the data-loader workers and must pickle (a
tokenizer, a processor and an image transform do). The data module asks the model for it
(``FoodLMMModule.conversation_format``); the data side itself never sees a token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from rode_lightning.batch import FoodBatch
from rode_lightning.conventions import IGNORE_INDEX
from rode_lightning.data.conversation import Conversation


class ConversationFormat(ABC):
    """Turns conversations into a :class:`FoodBatch` for one base model.

    ``max_length`` bounds the whole conversation, image tokens included; a longer answer is cut (and its cut part is
    not trained on), a prompt that alone does not fit is refused, naming the sample. ``tokenizer`` pads and decodes.
    """

    max_length: int = 512
    tokenizer = None

    @abstractmethod
    def __call__(self, conversations: list[Conversation]) -> FoodBatch:
        """The batch of ``conversations``: teacher-forced inputs where each has a reference answer, and the prompts
        (left-padded) for generation always."""

    @property
    def pad_token_id(self) -> int:
        """The id padding uses."""
        return self.tokenizer.pad_token_id

    def decode(self, token_ids: torch.Tensor | list[list[int]]) -> list[str]:
        """Generated ids (``batch x new tokens``, or one list per row) back to answer texts, special tokens dropped (and the space a
        first token may carry, LLaMA's "▁word" after "ASSISTANT:")."""
        return [answer.strip() for answer in self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)]

    def add_teacher_forced(self, batch: FoodBatch, ids: list[list[int]], labels: list[list[int]],
                           image_token_id: int | None) -> None:
        """Fill ``batch``'s whole-conversation fields from each row's ids and labels: right-padded ids and labels,
        the attention mask, the answer mask (where labels are kept) and the image mask (where ids are the image
        token; left unset without one)."""
        batch.input_ids, batch.attention_mask = pad_sequences(ids, self.pad_token_id, left=False)
        batch.labels, _ = pad_sequences(labels, IGNORE_INDEX, left=False)
        batch.answer_mask = (batch.labels != IGNORE_INDEX).long()
        if image_token_id is not None:
            batch.image_mask = (batch.input_ids == image_token_id).long()


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


def metadata(conversations: list[Conversation]) -> dict:
    """The batch fields every format fills the same way, from the conversations' words."""
    answered = [conversation.reference is not None for conversation in conversations]
    if any(answered) and not all(answered):
        raise ValueError("a batch mixes conversations with and without a reference answer")
    return {"ids": [c.id for c in conversations], "datasets": [c.dataset for c in conversations],
            "tasks": [c.task for c in conversations], "questions": [c.question for c in conversations],
            "references": [c.reference for c in conversations] if all(answered) else None,
            "image_paths": [c.image_path for c in conversations],
            # None where a sample has no cluster: a cluster-routed model refuses that rather than route it to 0.
            "cluster_ids": (None if any(c.cluster_id is None for c in conversations)
                            else torch.tensor([c.cluster_id for c in conversations], dtype=torch.long))}
