"""LLaVA-1.5's spelling of a conversation: the vicuna_v1 template, one ``<image>`` token per patch, open_clip pixels.

``<s>SYSTEM USER: <image>...<image>\\nQUESTION ASSISTANT: ANSWER</s>``, with the ``<image>`` token repeated once
per patch of the vision encoder (``FoodLMM.embed`` writes the projected patches over those positions), and further
turns as ``USER: QUESTION ASSISTANT: ANSWER</s>``. Labels copy the answer tokens (each answer's ``</s>`` included)
and mask everything else, so the loss is computed on answers only. Pixels are open_clip's own evaluation
preprocessing at the encoder's input size (resize, centre crop, CLIP normalisation), so they reach the encoder as in
its pre-training.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from rode_lightning.batch import FoodBatch
from rode_lightning.conventions import IGNORE_INDEX, IMAGE_PLACEHOLDER, SYSTEM_PROMPT
from rode_lightning.data.conversation import Conversation, Turn
from rode_lightning.model.formats.base import ConversationFormat, metadata, pad_sequences
from rode_lightning.user_errors import UserError

def build_prompt(question: str) -> str:
    """The first turn up to and including ``ASSISTANT:``; the answer (then ``</s>``) follows it."""
    return f"{SYSTEM_PROMPT} USER: {IMAGE_PLACEHOLDER}\n{question} ASSISTANT:"


def without_placeholder(question: str) -> str:
    """``question`` without any ``<image>`` of its own: LLaVA-style datasets write it (and a newline) before the first
    question, and the format places the image itself, once; a second one would be a second image to the model."""
    if IMAGE_PLACEHOLDER not in question:
        return question
    return question.replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "").strip()


class LlavaFormat(ConversationFormat):
    """Spells conversations for the LLaVA-1.5 base (``model/lmm.py``).

    Args:
        tokenizer: the language model's tokenizer, with ``<image>`` as one token (``data/tokenizer.py``).
        image_size: the vision encoder's input size.
        num_image_tokens: ``<image>`` tokens per image, one per patch.
        max_length: longest token sequence, image tokens included; longer answers are cut.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_size: int, num_image_tokens: int,
                 max_length: int = 512):
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        import open_clip  # with this format, not with the package: the transformers base never needs it

        self.image_transform = open_clip.image_transform(image_size, is_train=False)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)

    def _text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def encode_prompt(self, question: str) -> list[int]:
        """Token ids of the first turn up to ``ASSISTANT:``, with one ``<image>`` token per image patch.

        A question that carries ``<image>`` itself loses it (``without_placeholder``)."""
        before, after = build_prompt(without_placeholder(question)).split(IMAGE_PLACEHOLDER)
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return bos + self._text(before) + [self.image_token_id] * self.num_image_tokens + self._text(after)

    def _answer(self, text: str) -> list[int]:
        # The answer follows "ASSISTANT:" after a space, which its first token carries (LLaMA's "▁word").
        return self._text(" " + text) + [self.tokenizer.eos_token_id]

    def encode(self, conversation: Conversation) -> tuple[list[int], list[int], list[int]]:
        """``(input_ids, labels, prompt_ids)`` of one conversation, cut to ``max_length``."""
        turns: list[Turn] = list(conversation.turns)
        ids = self.encode_prompt(turns[0].text)
        labels = [IGNORE_INDEX] * len(ids)
        prompt_length = len(ids)  # where generation continues: before the last answer, or at the end without one
        for turn in turns[1:]:
            if turn.role == "assistant":
                answer = self._answer(turn.text)
                prompt_length = len(ids)
                ids, labels = ids + answer, labels + answer
            else:
                question = self._text(f"USER: {without_placeholder(turn.text)} ASSISTANT:")
                ids, labels = ids + question, labels + [IGNORE_INDEX] * len(question)
                prompt_length = len(ids)
        if prompt_length >= self.max_length:
            raise UserError(f"data.max_length: {self.max_length} is too short for the prompt of sample "
                            f"{conversation.id} ({prompt_length} tokens including {self.num_image_tokens} image "
                            "tokens)")
        return ids[: self.max_length], labels[: self.max_length], ids[:prompt_length]

    def __call__(self, conversations: list[Conversation]) -> FoodBatch:
        encoded = [self.encode(conversation) for conversation in conversations]
        prompt_ids, prompt_mask = pad_sequences([prompt for _, _, prompt in encoded], self.pad_token_id, left=True)
        batch = FoodBatch(prompt_ids=prompt_ids, prompt_attention_mask=prompt_mask,
                          pixel_values=torch.stack([self.image_transform(c.image.convert("RGB"))
                                                    for c in conversations]),
                          **metadata(conversations))
        if batch.has_answers:
            self.add_teacher_forced(batch, [ids for ids, _, _ in encoded], [labels for _, labels, _ in encoded],
                                    self.image_token_id)
        return batch
