"""A transformers processor's spelling of a conversation: its chat template, its image tokens, its pixel inputs.

Modern vision-language models ship a processor that knows the model's conversation template, expands the image
placeholder into the right number of image tokens for the image's size, and returns the pixel inputs the model's
forward takes. This format lets the processor do all of that. Tested on Qwen2-VL's processor (flattened patches and
``image_grid_thw``); pixel inputs with one entry per sample are batched too when their shapes agree (per-sample tile
counts that differ, SmolVLM's, are not handled yet). Not yet selectable from a config: it comes with the
transformers base.

Labels come from tokenizing the whole conversation once: the prompt rendered with ``add_generation_prompt=True`` must
be a token prefix of it (else the template is refused, naming the model family), and the labels cover the answer
and its end-of-turn token, nothing after it. The tokenizer is used as shipped: no token is added.
"""

from __future__ import annotations

import torch

from rode_lightning.batch import FoodBatch
from rode_lightning.conventions import IGNORE_INDEX
from rode_lightning.data.conversation import Conversation
from rode_lightning.model.formats.base import ConversationFormat, metadata, pad_sequences
from rode_lightning.user_errors import UserError

def chat_messages(conversation: Conversation, prompt_only: bool) -> list[dict]:
    """The conversation as the ``messages`` a processor's chat template takes; the image with the first user turn."""
    turns = conversation.prompt_turns if prompt_only else conversation.turns
    messages = []
    for position, turn in enumerate(turns):
        content = [{"type": "text", "text": turn.text}]
        if position == 0:
            content.insert(0, {"type": "image"})
        messages.append({"role": turn.role, "content": content})
    return messages


class ChatTemplateFormat(ConversationFormat):
    """Spells conversations with a transformers processor (``AutoProcessor``) and its chat template.

    Args:
        processor: the model's processor, with a chat template.
        end_of_turn: the token that closes an assistant turn (Qwen: ``<|im_end|>``); the labels end with it. Default:
            the tokenizer's eos token.
        max_length: longest sequence, image tokens included; a longer conversation (or prompt) is refused: cutting
            it could cut image tokens, which the model must find all of. The data module sets it from
            ``data.max_length``.
    """

    def __init__(self, processor, end_of_turn: str | None = None, max_length: int = 2048):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        token = end_of_turn or self.tokenizer.eos_token
        self.end_of_turn_id = self.tokenizer.convert_tokens_to_ids(token)
        self.max_length = max_length
        self.image_token_id = getattr(processor, "image_token_id", None)
        if self.image_token_id is None and getattr(processor, "image_token", None) is not None:
            self.image_token_id = self.tokenizer.convert_tokens_to_ids(processor.image_token)

    def _render(self, conversations: list[Conversation], prompt_only: bool) -> list[str]:
        return [self.processor.apply_chat_template(chat_messages(conversation, prompt_only), tokenize=False,
                                                   add_generation_prompt=prompt_only)
                for conversation in conversations]

    def _encode(self, texts: list[str], images: list) -> dict:
        """The processor on unpadded texts (one row each); padding is ours, so that both sides are possible."""
        rows = [self.processor(text=[text], images=[image], return_tensors="pt") for text, image in zip(texts, images)]
        return {"ids": [row["input_ids"][0].tolist() for row in rows], "pixels": rows}

    def __call__(self, conversations: list[Conversation]) -> FoodBatch:
        images = [conversation.image.convert("RGB") for conversation in conversations]
        prompts = self._encode(self._render(conversations, prompt_only=True), images)
        prompt_ids, prompt_mask = pad_sequences(prompts["ids"], self.pad_token_id, left=True)
        for ids, conversation in zip(prompts["ids"], conversations):
            if len(ids) >= self.max_length:
                raise UserError(f"data.max_length: {self.max_length} is too short for the prompt of sample "
                                f"{conversation.id} ({len(ids)} tokens, image tokens included)")
        rows = prompts["pixels"]
        pixel_values = torch.cat([row["pixel_values"] for row in rows])
        # Per-token tensors (token types) belong to one spelling of the ids, prompt or whole conversation: the
        # model derives them from the ids it is given.
        extra = {name: torch.cat([row[name] for row in rows]) for name in rows[0]
                 if name not in ("input_ids", "attention_mask", "pixel_values", "mm_token_type_ids", "token_type_ids")}
        flattened = pixel_values.shape[0] != len(conversations)
        batch = FoodBatch(prompt_ids=prompt_ids, prompt_attention_mask=prompt_mask, pixel_values=pixel_values,
                          extra=extra, **metadata(conversations),
                          pixel_rows=(torch.tensor([row["pixel_values"].shape[0] for row in rows])
                                      if flattened else None))
        if batch.has_answers:
            whole = self._encode(self._render(conversations, prompt_only=False), images)["ids"]
            labels = [self._labels(ids, prompt, conversation)
                      for ids, prompt, conversation in zip(whole, prompts["ids"], conversations)]
            self.add_teacher_forced(batch, whole, labels, self.image_token_id)
        return batch

    def _labels(self, ids: list[int], prompt: list[int], conversation: Conversation) -> list[int]:
        """The answer's tokens and its end-of-turn token; everything else ignored."""
        if ids[: len(prompt)] != prompt:
            raise UserError(f"the chat template of {type(self.processor).__name__} does not render the prompt "
                            "(add_generation_prompt=True) as a token prefix of the whole conversation, so the answer "
                            "tokens cannot be found; this model family is not supported")
        if len(ids) > self.max_length:
            raise UserError(f"data.max_length: {self.max_length} is too short for sample {conversation.id} "
                            f"({len(ids)} tokens, image tokens included)")
        answer = ids[len(prompt):]
        end = answer.index(self.end_of_turn_id) + 1 if self.end_of_turn_id in answer else len(answer)
        return [IGNORE_INDEX] * len(prompt) + answer[:end] + [IGNORE_INDEX] * (len(answer) - end)

