"""A transformers processor's spelling of a conversation: its chat template, its image tokens, its pixel inputs.

Modern vision-language models ship a processor that knows the model's conversation template, expands the image
placeholder into the right number of image tokens for the image's size, and returns the pixel inputs the model's
forward takes. This format lets the processor do all of that, on the whole batch at once, so that the pixel inputs are
batched as the processor batches them for its model (flattened patches with ``image_grid_thw``, tiles padded with a
``pixel_attention_mask``, ``image_sizes``). The spelling of ``model.base: transformers``
(``model/transformers_base.py``).

Labels come from tokenizing the whole conversation once: the prompt rendered with ``add_generation_prompt=True`` must
be a token prefix of it (else the template is refused, naming the model family), and the labels cover the answer
and its end-of-turn token, nothing after it. A multi-turn conversation is trained on every answer: each earlier
answer starts where the turns before it, rendered with the generation prompt, end (again a token prefix of the whole,
found with one more processor call for the batch's earlier answers) and ends with its end-of-turn token. The
tokenizer is used as shipped: no token is added.
"""

from __future__ import annotations

import torch

from rode_lightning.batch import FoodBatch
from rode_lightning.conventions import IGNORE_INDEX
from rode_lightning.data.conversation import Conversation, Turn
from rode_lightning.model.formats.base import ConversationFormat, metadata, pad_sequences
from rode_lightning.user_errors import UserError

_NOT_PIXEL_INPUTS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


def _pixel_rows(pixel_values: torch.Tensor | None, extra: dict, prompt_rows: list[list[int]],
                image_token_id: int | None) -> torch.Tensor | None:
    """How many rows of ``pixel_values`` each sample owns when the processor flattened them over the batch; ``None``
    when there is one row per sample. Qwen's patches: ``image_grid_thw``'s t*h*w per image (one image per sample).
    InternVL's tiles: each tile becomes the same number of image tokens, so a sample's share of the rows is its
    share of the image tokens."""
    batch_size = len(prompt_rows)
    if pixel_values is None or pixel_values.shape[0] == batch_size and "image_grid_thw" not in extra:
        return None
    if "image_grid_thw" in extra:
        return extra["image_grid_thw"].prod(dim=-1)
    tokens = [row.count(image_token_id) for row in prompt_rows]
    rows = pixel_values.shape[0]
    if image_token_id is not None and sum(tokens) % rows == 0 and all(count * rows % sum(tokens) == 0
                                                                      for count in tokens):
        return torch.tensor([count * rows // sum(tokens) for count in tokens])
    raise ValueError(f"the processor returned {rows} pixel rows for {batch_size} samples, and neither "
                     "image_grid_thw nor the image tokens tell which rows are whose")


def processor_image_token_id(processor) -> int | None:
    """The image token id a processor declares (``image_token_id``, or its ``image_token``'s id)."""
    token_id = getattr(processor, "image_token_id", None)
    if token_id is None and getattr(processor, "image_token", None) is not None:
        token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    return token_id


def chat_messages(conversation: Conversation, prompt_only: bool) -> list[dict]:
    """The conversation as the ``messages`` a processor's chat template takes; the image with the first user turn."""
    return turn_messages(conversation.prompt_turns if prompt_only else conversation.turns)


def turn_messages(turns: tuple[Turn, ...]) -> list[dict]:
    """``turns`` as chat-template ``messages``, the image part in the first one."""
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
        image_token_id: the id the model's config gives its image tokens (what the image mask marks); default: the
            processor's. Gemma 3's processor names ``<start_of_image>`` where the model's image tokens are
            ``<image_soft_token>``, so the module passes the config's.
    """

    def __init__(self, processor, end_of_turn: str | None = None, max_length: int = 2048,
                 image_token_id: int | None = None):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        token = end_of_turn or self.tokenizer.eos_token
        self.end_of_turn_id = self.tokenizer.convert_tokens_to_ids(token)
        self.max_length = max_length
        self.image_token_id = image_token_id if image_token_id is not None else processor_image_token_id(processor)

    def _render(self, conversations: list[Conversation], prompt_only: bool) -> list[str]:
        return [self.processor.apply_chat_template(chat_messages(conversation, prompt_only), tokenize=False,
                                                   add_generation_prompt=prompt_only)
                for conversation in conversations]

    def _encode(self, texts: list[str], images: list, padding_side: str) -> dict:
        """The processor on the whole batch: it expands each image's tokens and batches its own pixel inputs (the
        one place that knows how: flattened patches, tiles, image sizes). Returns its outputs and each row's real
        token ids. A template that writes the bos token itself (Gemma 3, Idefics3) gets no second one, as
        transformers' own ``apply_chat_template(tokenize=True)`` does it."""
        bos = self.tokenizer.bos_token
        writes_bos = bos is not None and all(text.startswith(bos) for text in texts)
        outputs = dict(self.processor(text=texts, images=[[image] for image in images], padding=True,
                                      padding_side=padding_side, return_tensors="pt",
                                      **({"add_special_tokens": False} if writes_bos else {})))
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(outputs["input_ids"], outputs["attention_mask"])]
        return {"outputs": outputs, "rows": rows}

    def __call__(self, conversations: list[Conversation]) -> FoodBatch:
        images = [conversation.image.convert("RGB") for conversation in conversations]
        prompts = self._encode(self._render(conversations, prompt_only=True), images, "left")
        for ids, conversation in zip(prompts["rows"], conversations):
            if len(ids) >= self.max_length:
                raise UserError(f"data.max_length: {self.max_length} is too short for the prompt of sample "
                                f"{conversation.id} ({len(ids)} tokens, image tokens included)")
        outputs = prompts["outputs"]
        prompt_ids, prompt_mask = pad_sequences(prompts["rows"], self.pad_token_id, left=True)
        # Per-token tensors (token types) belong to one spelling of the ids, prompt or whole conversation: the
        # model derives them from the ids it is given (TransformersLMM.token_types).
        extra = {name: tensor for name, tensor in outputs.items() if name not in _NOT_PIXEL_INPUTS}
        pixel_values = extra.pop("pixel_values", None)
        batch = FoodBatch(prompt_ids=prompt_ids, prompt_attention_mask=prompt_mask, pixel_values=pixel_values,
                          extra=extra,
                          pixel_rows=_pixel_rows(pixel_values, extra, prompts["rows"], self.image_token_id),
                          **metadata(conversations))
        if batch.has_answers:
            whole = self._encode(self._render(conversations, prompt_only=False), images, "right")["rows"]
            earlier = self._earlier_prompts(conversations, images)
            labels = [self._labels(ids, earlier[row] + [prompt], conversation)
                      for row, (ids, prompt, conversation) in enumerate(zip(whole, prompts["rows"], conversations))]
            self.add_teacher_forced(batch, whole, labels, self.image_token_id)
        return batch

    def _earlier_prompts(self, conversations: list[Conversation], images: list) -> list[list[list[int]]]:
        """Per conversation, the token ids of the turns before each assistant turn but the last, rendered with the
        generation prompt: where each earlier answer starts. One processor call for the whole batch; none when every
        conversation has a single answer (so single-turn batches are spelled exactly as before)."""
        wanted = [(row, conversation.turns[:position]) for row, conversation in enumerate(conversations)
                  for position, turn in enumerate(conversation.turns[:-1]) if turn.role == "assistant"]
        earlier: list[list[list[int]]] = [[] for _ in conversations]
        if not wanted:
            return earlier
        texts = [self.processor.apply_chat_template(turn_messages(turns), tokenize=False, add_generation_prompt=True)
                 for _, turns in wanted]
        rows = self._encode(texts, [images[row] for row, _ in wanted], "left")["rows"]
        for (row, _), ids in zip(wanted, rows):
            earlier[row].append(ids)
        return earlier

    def _labels(self, ids: list[int], prompts: list[list[int]], conversation: Conversation) -> list[int]:
        """Each answer's tokens and its end-of-turn token; everything else ignored. ``prompts``: the ids before each
        answer, in order, the last one the generation prompt of the final answer."""
        if ids[: len(prompts[-1])] != prompts[-1]:
            raise UserError(f"the chat template of {type(self.processor).__name__} does not render the prompt "
                            "(add_generation_prompt=True) as a token prefix of the whole conversation, so the answer "
                            "tokens cannot be found; this model family is not supported")
        for number, prompt in enumerate(prompts[:-1], start=1):
            if ids[: len(prompt)] != prompt:  # e.g. a template that rewrites earlier answers (drops their reasoning)
                raise UserError(f"the chat template of {type(self.processor).__name__} does not render the turns "
                                f"before answer {number} of sample {conversation.id} (add_generation_prompt=True) as a "
                                "token prefix of the whole conversation, so that answer cannot be found; multi-turn "
                                "conversations are not supported with this template")
        if len(ids) > self.max_length:
            raise UserError(f"data.max_length: {self.max_length} is too short for sample {conversation.id} "
                            f"({len(ids)} tokens, image tokens included)")
        labels = [IGNORE_INDEX] * len(ids)
        for number, start in enumerate(len(prompt) for prompt in prompts):
            following = len(prompts[number + 1]) if number + 1 < len(prompts) else len(ids)
            answer = ids[start:following]
            if self.end_of_turn_id in answer:
                end = start + answer.index(self.end_of_turn_id) + 1
            elif number + 1 == len(prompts):
                end = len(ids)  # the final answer of a template that does not close it: as before
            else:
                raise UserError(f"the chat template of {type(self.processor).__name__} does not close answer "
                                f"{number + 1} of sample {conversation.id} with the end-of-turn token "
                                f"{self.tokenizer.convert_ids_to_tokens(self.end_of_turn_id)!r}, so its end cannot be "
                                "found (model.transformers.end_of_turn names the token)")
            labels[start:end] = ids[start:end]
        return labels

