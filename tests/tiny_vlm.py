"""A tiny Qwen2-VL processor and model built in code, offline, for tests (no download, no network).

Not a test file: tests import ``tiny_qwen2vl_processor``, ``tiny_qwen2vl_model`` and ``qwen_conversation`` from here.
The processor is saved and reloaded through ``AutoProcessor`` so a test using it also proves the saved form loads the
way a real checkpoint directory would. Everything agrees with the real Qwen2-VL in structure (special tokens, chat
template layout, flattened patches, ``image_grid_thw``, M-RoPE), only the sizes are small.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoProcessor,
    GenerationConfig,
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

# 8 px patches merged 2x2: a 32x32 image gives 4 image tokens, a 48x64 one 12.
PATCH_SIZE = 8
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
# Bounds on the resized image area: a 16x16 floor (one merged token) and a 64x64 ceiling keep sequences short, and the
# 32-64 px images the tests use pass through at their own size (sides are rounded to multiples of 16).
MIN_PIXELS = (PATCH_SIZE * MERGE_SIZE) ** 2
MAX_PIXELS = 64 * 64

SYSTEM_PROMPT = "You are a helpful assistant."
TEXT_HIDDEN_SIZE = 64

_CORPUS = (
    SYSTEM_PROMPT,
    "system user assistant",
    "What dish is shown in the image? It is a bowl of ramen with egg and pork.",
    "Which ingredients are in this dish? Rice, chicken, onion, garlic, salt and pepper.",
    "How many calories does this meal have? About 450 kcal, 20 g protein, 15 g fat and 55 g carbohydrate.",
    "The pizza has tomato, mozzarella and basil. The salad has lettuce, cucumber and olive oil.",
    "Answer with the name of the food: sushi, burger, pasta, curry, dumplings, pancakes, soup.",
)

# Qwen's prompt structure: a default system turn when none is given, one <|im_start|>role ... <|im_end|> block per
# turn, an image part becoming <|vision_start|><|image_pad|><|vision_end|> (the processor then repeats <|image_pad|>
# once per merged patch).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_qwen2_tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE trained in memory on a few food sentences, wrapped as ``Qwen2Tokenizer``.

    Why: ``Qwen2Tokenizer`` rebuilds its own pipeline (Qwen's split regex, then byte-level) from ``vocab`` and
    ``merges`` on every load, so the vocabulary must be byte-level and trained behind the same pre-tokenizer, or the
    merges would not apply after a reload. The 256 byte characters are the initial alphabet, so any text encodes.
    The special tokens come first in training so their ids are fixed and in the saved vocabulary.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    # 448 = 7 special + 256 bytes + ~185 merges: common words become one token, and 448 is already a multiple of 64.
    trainer = trainers.BpeTrainer(
        vocab_size=448, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    # Real Qwen2-VL chat tokenizers end a turn (and generation) at <|im_end|> and pad with <|endoftext|>;
    # extra_special_tokens keeps the vision tokens whole and skipped by decode(skip_special_tokens=True).
    return Qwen2Tokenizer(
        vocab=model["vocab"], merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]],
        eos_token=IM_END, pad_token=PAD_TOKEN, unk_token=None,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (PAD_TOKEN, IM_END)],
    )


def tiny_qwen2vl_processor(directory: Path) -> Qwen2VLProcessor:
    """A tiny Qwen2-VL processor, saved to ``directory`` and returned as reloaded by ``AutoProcessor``.

    Why the settings: ``patch_size``, ``merge_size`` and ``temporal_patch_size`` must equal the vision config of
    ``tiny_qwen2vl_model`` (the model reshapes the flattened patches by them); ``min_pixels`` / ``max_pixels`` bound
    the resized area so small images give a few tokens; Qwen2-VL's processor requires a video processor even for images.
    """
    sizes = dict(patch_size=PATCH_SIZE, merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE,
                 min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS,
                 size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS})
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**sizes), tokenizer=_tiny_qwen2_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(**sizes), chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(directory)
    return AutoProcessor.from_pretrained(directory)


def tiny_qwen2vl_model(processor: Qwen2VLProcessor, seed: int = 0) -> Qwen2VLForConditionalGeneration:
    """A randomly initialised 2-layer Qwen2-VL (hidden 64) that agrees with ``processor``, in eval mode.

    Why the settings: the image/video/vision-start/end ids must be the tokenizer's (the model finds image positions by
    id); ``vision_config.hidden_size`` is the merger's output and must equal the text hidden size (else a misleading
    "tokens: N, features: N" error); ``mrope_section`` must sum to head_dim / 2 (16 / 2 here, else a split error);
    generation stops at ``<|im_end|>`` like the real chat model. ``seed`` makes the weights reproducible without
    touching the global random state.
    """
    tokenizer = processor.tokenizer
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    text = dict(
        vocab_size=-(-len(tokenizer) // 64) * 64, hidden_size=TEXT_HIDDEN_SIZE, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids[PAD_TOKEN], eos_token_id=ids[IM_END], pad_token_id=ids[PAD_TOKEN],
    )
    vision = dict(depth=2, embed_dim=32, hidden_size=TEXT_HIDDEN_SIZE, num_heads=2, mlp_ratio=2,
                  patch_size=PATCH_SIZE, spatial_merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE)
    config = Qwen2VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids[IMAGE_PAD], video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START], vision_end_token_id=ids[VISION_END],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[PAD_TOKEN], eos_token_id=ids[IM_END], pad_token_id=ids[PAD_TOKEN],
    )
    return model.eval()


def qwen_conversation(image: Any, question: str, answer: str | None = None) -> list[dict]:
    """The messages ``apply_chat_template`` takes for one (image, question[, answer]) exchange.

    The user turn holds the image part first, then the question, as Qwen's examples do; the assistant turn is added
    only when ``answer`` is given (a training example), so without it the template's generation prompt follows.
    """
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def save_tiny_qwen2vl(directory: Path, seed: int = 0) -> Path:
    """A tiny Qwen2-VL model directory as a user would have downloaded it: ``config.json``, weights,
    ``generation_config.json`` and the processor's files with its chat template."""
    processor = tiny_qwen2vl_processor(directory)
    tiny_qwen2vl_model(processor, seed).save_pretrained(directory)
    return directory


def two_conversations(answers: bool = True) -> list:
    """Two single-turn conversations with images of different sizes (32 x 32 and 64 x 48: 4 and 12 image tokens
    here), with or without reference answers: what the transformers-base tests batch."""
    from PIL import Image

    from rode_lightning.data.conversation import single_turn

    images = [Image.new("RGB", (32, 32), (200, 40, 40)), Image.new("RGB", (64, 48), (30, 160, 90))]
    questions = ["What dish is shown in the image?", "Which ingredients are in this dish?"]
    replies = ["It is a bowl of ramen.", "Rice, chicken, onion."]
    return [single_turn(image, question, reply if answers else None, id=str(row), dataset="demo", task="category")
            for row, (image, question, reply) in enumerate(zip(images, questions, replies))]
