"""Tiny vision-language models of nine transformers families, built in code, offline, for tests (no download).

Not a test file: tests call ``build_tiny_family(name, directory)`` and then load the directory the way a real
checkpoint is loaded (``AutoModelForImageTextToText`` / ``AutoProcessor``), so a test using it also proves that
the saved form loads. Each family agrees with the real one in structure (special tokens, prompt layout of the chat
template, how the processor expands an image, the pixel inputs the forward takes), only the sizes are small: 2 text
layers of hidden 64, a 2-layer vision tower of hidden 32 with 8 px patches, and processor settings that bound any
image to a handful of image tokens.

The chat templates are minimal, in each family's prompt layout, and written so that the prompt rendered with
``add_generation_prompt=True`` is a string and token prefix of the whole conversation, its answer followed by
``END_OF_TURN[name]``; they take content parts ``{"type": "image"}`` (the image itself goes to the processor's
``images=``) and ``{"type": "text", "text": ...}``, or a plain string.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessor,
    Gemma3Processor,
    GemmaTokenizer,
    GenerationConfig,
    GotOcr2ImageProcessor,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessor,
    Idefics3Processor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVideoProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessor,
    SmolVLMProcessor,
    SmolVLMVideoProcessor,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from tests.tiny_vlm import _CORPUS, CHAT_TEMPLATE as QWEN2_VL_CHAT_TEMPLATE

FAMILIES: tuple[str, ...] = (
    "llava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "idefics3", "smolvlm", "llava_onevision", "gemma3", "internvl",
)

# The token that closes an assistant turn in each family's chat template; the saved generation config stops there.
END_OF_TURN: dict[str, str] = {
    "llava": "</s>",
    "qwen2_vl": "<|im_end|>",
    "qwen2_5_vl": "<|im_end|>",
    "qwen3_vl": "<|im_end|>",
    "idefics3": "<end_of_utterance>",
    "smolvlm": "<end_of_utterance>",
    "llava_onevision": "<|im_end|>",
    "gemma3": "<end_of_turn>",
    "internvl": "<|im_end|>",
}

TEXT_HIDDEN = 64
VISION_HIDDEN = 32
PATCH = 8
# Fixed-size families resize every image to IMAGE_SIZE x IMAGE_SIZE: 4x4 patches of 8 px.
IMAGE_SIZE = 32

_TEXT = dict(hidden_size=TEXT_HIDDEN, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=2048)
_VISION = dict(hidden_size=VISION_HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               image_size=IMAGE_SIZE, patch_size=PATCH)

# Qwen merges 2x2 patches into one token; Qwen2-VL and Qwen2.5-VL split the 8 rotary frequency pairs of a 16-dim
# head into (temporal, height, width) blocks, Qwen3-VL interleaves them (H at 1, 4; W at 2, 5; T the rest).
_QWEN_MERGE = 2
_QWEN_TEMPORAL = 2
_QWEN_SIZES = dict(patch_size=PATCH, merge_size=_QWEN_MERGE, temporal_patch_size=_QWEN_TEMPORAL,
                   min_pixels=(PATCH * _QWEN_MERGE) ** 2, max_pixels=64 * 64,
                   size={"shortest_edge": (PATCH * _QWEN_MERGE) ** 2, "longest_edge": 64 * 64})
_QWEN_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>")

# Idefics3 / SmolVLM: images are resized to a longest edge of 64 and split into 32 px tiles plus a 32 px global
# image; each tile gives (32/8)^2 / 2^2 = 4 <image> tokens after the pixel shuffle.
_IDEFICS_SCALE = 2
_IDEFICS_SEQ_LEN = (IMAGE_SIZE // PATCH) ** 2 // _IDEFICS_SCALE**2
_IDEFICS_TOKENS = ("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
                   *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)))
_IDEFICS_SIZES = dict(size={"longest_edge": 2 * IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE})

# LLaVA-OneVision: a base 32 px view plus the crops of the best of these resolutions (at most 2x2 crops).
_ONEVISION_PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]

# InternVL / Gemma 3: fixed-size 32 px views, each pooled to 2x2 = 4 image tokens. InternVL tiles an image into at
# most 4 views plus a thumbnail (its processor always crops to patches; the real maximum is 12).
_POOLED_TOKENS = 4
_INTERNVL_TILES = 4

# ---------------------------------------------------------------------------------------------------------------
# Chat templates: each family's prompt layout, reduced to what a tiny test needs.


def _parts(image: str, text: str = "{{ part['text'] }}") -> str:
    """Jinja that renders a message's content (a string, or image/text parts) with ``image`` for each image part."""
    return (
        "{% if message['content'] is string %}" + text.replace("part['text']", "message['content']") + "{% else %}"
        "{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}" + image + "{% elif part['type'] == 'text' %}" + text + "{% endif %}"
        "{% endfor %}{% endif %}"
    )


# LLaVA-1.5 (Vicuna v1 layout): "USER: <image>\nquestion ASSISTANT: answer</s>"; the generation prompt
# "ASSISTANT:" is followed by " answer" (the tokenizer adds <s> in front, as Llama's does).
_LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: " + _parts("<image>\n") + " "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: " + _parts("") + "</s>"
    "{% else %}" + _parts("") + " {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# Qwen3-VL: the Qwen2-VL layout without the default system turn.
_QWEN3_VL_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n" + _parts("<|vision_start|><|image_pad|><|vision_end|>") + "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Idefics3 (Llama 3 text): "<|begin_of_text|>User:<image>question<end_of_utterance>\nAssistant: answer
# <end_of_utterance>\n"; a turn opening with an image has no space after the colon. The real template starts with
# the bos token and the real tokenizer also adds one, so does this one (processor(text=...) then gives two, as the
# real model does; apply_chat_template(tokenize=True) drops the tokenizer's).
_IDEFICS_TURNS = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is not string and message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    + _parts("<image>") + "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
_IDEFICS3_TEMPLATE = "{{ bos_token }}" + _IDEFICS_TURNS
# SmolVLM: the same turns after <|im_start|> (its bos token; its tokenizer adds none).
_SMOLVLM_TEMPLATE = "<|im_start|>" + _IDEFICS_TURNS

# LLaVA-OneVision (Qwen2 text): "<|im_start|>user <image>\nquestion<|im_end|><|im_start|>assistant\nanswer
# <|im_end|>". The real template writes the assistant turn as "assistant \n" but the generation prompt as
# "assistant\n", so its prompt is not a prefix of the conversation: here both are "assistant\n".
_LLAVA_ONEVISION_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}<|im_start|>assistant\n" + _parts("") + "<|im_end|>"
    "{% else %}<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ '\\n' + message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}<image>{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ '\\n' + part['text'] }}{% endfor %}"
    "{% endif %}<|im_end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Gemma 3: "<bos><start_of_turn>user\n<start_of_image>question<end_of_turn>\n<start_of_turn>model\nanswer
# <end_of_turn>\n" (the assistant is "model"; the processor expands <start_of_image> into the image tokens). Like
# the real one, the template starts with the bos token and the tokenizer adds one too.
_GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<start_of_turn>{% if message['role'] == 'assistant' %}model{% else %}{{ message['role'] }}{% endif %}{{ '\\n' }}"
    + _parts("<start_of_image>", "{{ part['text'] | trim }}") + "<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

# InternVL 3 (Qwen2.5 text): the ChatML layout, an image part becoming "<IMG_CONTEXT>\n" (the processor expands it
# into <img><IMG_CONTEXT>...</img>).
_INTERNVL_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n" + _parts("<IMG_CONTEXT>\n") + "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CHAT_TEMPLATES: dict[str, str] = {
    "llava": _LLAVA_TEMPLATE,
    "qwen2_vl": QWEN2_VL_CHAT_TEMPLATE,
    "qwen2_5_vl": QWEN2_VL_CHAT_TEMPLATE,
    "qwen3_vl": _QWEN3_VL_TEMPLATE,
    "idefics3": _IDEFICS3_TEMPLATE,
    "smolvlm": _SMOLVLM_TEMPLATE,
    "llava_onevision": _LLAVA_ONEVISION_TEMPLATE,
    "gemma3": _GEMMA3_TEMPLATE,
    "internvl": _INTERNVL_TEMPLATE,
}


def family_chat_template(name: str) -> str:
    """The minimal Jinja chat template of family ``name`` (the one ``build_tiny_family`` saves with its processor)."""
    return _CHAT_TEMPLATES[_check_family(name)]


def _check_family(name: str) -> str:
    if name not in FAMILIES:
        raise ValueError(f"family: {name!r} is not a tiny family; expected one of {', '.join(FAMILIES)}")
    return name


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers: byte-level BPEs trained in memory on a few food sentences.

# ~190 merges on top of the 256 bytes: common words of the corpus become one token.
_MERGES = 192


def _byte_level_bpe(special_tokens: tuple[str, ...]) -> Tokenizer:
    """A byte-level BPE behind Qwen's split regex; the special tokens come first so their ids are fixed.

    Why byte-level: ``Qwen2Tokenizer`` rebuilds this very pipeline from ``vocab`` and ``merges`` on every load, and
    the other byte-level families keep it in ``tokenizer.json``; the 256 byte characters as initial alphabet make
    any text encodable. The split regex keeps merges inside words, so a generation prompt ending at "\\n" or ":"
    stays a token prefix of the prompt followed by its answer.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=len(special_tokens) + 256 + _MERGES, special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    return bpe


def _vocab_and_merges(bpe: Tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def _qwen2_tokenizer(special_tokens: tuple[str, ...], eos: str, pad: str, **named: str) -> Qwen2Tokenizer:
    """``Qwen2Tokenizer`` (Qwen families, LLaVA-OneVision, InternVL) over a trained byte-level BPE.

    ``named`` tokens (``start_image_token="<img>"``...) become ``tokenizer.<name>`` / ``<name>_id``, which some
    processors read; the other special tokens stay whole and are skipped by ``decode(skip_special_tokens=True)``.
    """
    vocab, merges = _vocab_and_merges(_byte_level_bpe(special_tokens))
    extra = [t for t in special_tokens if t not in (eos, pad, *named.values())]
    return Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token=eos, pad_token=pad, unk_token=None,
                          extra_special_tokens=extra, **named)


def _fast_tokenizer(special_tokens: tuple[str, ...], eos: str, pad: str, bos: str | None = None,
                    add_bos: bool = False, unk: str | None = None, **named: str) -> PreTrainedTokenizerFast:
    """``PreTrainedTokenizerFast`` (llava, Idefics3, SmolVLM) over a trained byte-level BPE kept whole in
    ``tokenizer.json``; ``add_bos`` puts ``bos`` in front of every encoding, as Llama's tokenizers do."""
    bpe = _byte_level_bpe(special_tokens)
    if add_bos:
        bpe.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bpe.token_to_id(bos))],
        )
    roles = {"eos_token": eos, "pad_token": pad, "bos_token": bos, "unk_token": unk}
    roles = {key: value for key, value in roles.items() if value is not None}
    extra = [t for t in special_tokens if t not in (*roles.values(), *named.values())]
    return PreTrainedTokenizerFast(tokenizer_object=bpe, extra_special_tokens=extra, **roles, **named)


_GEMMA_SPECIAL = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
                  "<start_of_image>", "<end_of_image>", "<image_soft_token>")


def _gemma_tokenizer() -> GemmaTokenizer:
    """``GemmaTokenizer``: a SentencePiece-style BPE (spaces as "▁", byte fallback to ``<0xNN>``), adding ``<bos>``.

    Why trained this way: ``GemmaTokenizer`` rebuilds a pipeline with no effective pre-tokenizer (spaces become "▁"
    first), so its merges apply across the whole text; training them on pieces split before "▁" and around "\\n"
    keeps every merge inside a word, so a prompt ending at "model\\n" stays a token prefix of prompt + answer. The
    256 byte tokens let any text encode.
    """
    bpe = Tokenizer(models.BPE(byte_fallback=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.Split("▁", behavior="merged_with_next"),
    ])
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False)
    # Gemma's turn words and newline join the corpus, so they are whole tokens as in the real vocabulary.
    bpe.train_from_iterator((*_CORPUS, "user\nmodel\n"), trainer=trainer)
    trained, merges = _vocab_and_merges(bpe)
    tokens = [*_GEMMA_SPECIAL, *(f"<0x{b:02X}>" for b in range(256)),
              *sorted(trained, key=trained.__getitem__)]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    return GemmaTokenizer(
        vocab=vocab, merges=merges, add_bos_token=True, eos_token="<end_of_turn>",
        boi_token="<start_of_image>", eoi_token="<end_of_image>", image_token="<image_soft_token>",
        extra_special_tokens=["<eos>", "<start_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"],
    )


# ---------------------------------------------------------------------------------------------------------------
# Families: each returns (processor, model config, model class); build_tiny_family seeds, builds and saves.


def _vocab_size(tokenizer) -> int:
    """``len(tokenizer)`` rounded up to a multiple of 64, as real checkpoints pad their embedding tables."""
    return -(-len(tokenizer) // 64) * 64


def _ids(tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _text(tokenizer, end_of_turn: str, **extra: Any) -> dict[str, Any]:
    """The 2-layer text config shared by every family; its token ids are the tokenizer's."""
    return dict(_TEXT, vocab_size=_vocab_size(tokenizer), eos_token_id=tokenizer.convert_tokens_to_ids(end_of_turn),
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, **extra)


def _llava() -> tuple[ProcessorMixin, Any, type[PreTrainedModel]]:
    """LLaVA-1.5: a CLIP tower (class token dropped by the "default" strategy, features of the second-to-last
    layer) and a Llama text model; 16 patches give 16 <image> tokens."""
    tokenizer = _fast_tokenizer(("<unk>", "<s>", "</s>", "<pad>", "<image>"), eos="</s>", pad="<pad>", bos="<s>",
                                add_bos=True, unk="<unk>", image_token="<image>")
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=_LLAVA_TEMPLATE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_VISION, hidden_act="quick_gelu"),
        text_config=dict(_text(tokenizer, "</s>"), model_type="llama"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    return processor, config, LlavaForConditionalGeneration


def _qwen_ids(tokenizer) -> dict[str, int]:
    start, end, image, video = _ids(tokenizer, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    return dict(vision_start_token_id=start, vision_end_token_id=end, image_token_id=image, video_token_id=video)


def _qwen_vision(**extra: Any) -> dict[str, Any]:
    return dict(depth=2, num_heads=2, patch_size=PATCH, spatial_merge_size=_QWEN_MERGE,
                temporal_patch_size=_QWEN_TEMPORAL, **extra)


def _qwen2_vl() -> tuple[ProcessorMixin, Any, type[PreTrainedModel]]:
    """Qwen2-VL: the vision merger outputs ``vision_config.hidden_size``, which must be the text hidden size."""
    tokenizer = _qwen2_tokenizer(_QWEN_TOKENS, eos="<|im_end|>", pad="<|endoftext|>")
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**_QWEN_SIZES), tokenizer=tokenizer,
                                 video_processor=Qwen2VLVideoProcessor(**_QWEN_SIZES),
                                 chat_template=QWEN2_VL_CHAT_TEMPLATE)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    config = Qwen2VLConfig(
        text_config=_text(tokenizer, "<|im_end|>", rope_parameters=rope),
        vision_config=_qwen_vision(embed_dim=VISION_HIDDEN, hidden_size=TEXT_HIDDEN, mlp_ratio=2),
        **_qwen_ids(tokenizer),
    )
    return processor, config, Qwen2VLForConditionalGeneration


def _qwen2_5_vl() -> tuple[ProcessorMixin, Any, type[PreTrainedModel]]:
    """Qwen2.5-VL: ``out_hidden_size`` is the merger's output; window attention over 32 px windows (2x2 merged
    tokens) in the first block, full attention in the second."""
    tokenizer = _qwen2_tokenizer(_QWEN_TOKENS, eos="<|im_end|>", pad="<|endoftext|>")
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**_QWEN_SIZES), tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(**_QWEN_SIZES),
                                    chat_template=QWEN2_VL_CHAT_TEMPLATE)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    config = Qwen2_5_VLConfig(
        text_config=_text(tokenizer, "<|im_end|>", rope_parameters=rope),
        vision_config=_qwen_vision(hidden_size=VISION_HIDDEN, intermediate_size=64, out_hidden_size=TEXT_HIDDEN,
                                   window_size=2 * PATCH * _QWEN_MERGE, fullatt_block_indexes=[1]),
        **_qwen_ids(tokenizer),
    )
    return processor, config, Qwen2_5_VLForConditionalGeneration


def _qwen3_vl() -> tuple[ProcessorMixin, Any, type[PreTrainedModel]]:
    """Qwen3-VL: ``head_dim`` set (16), an interleaved ``mrope_section`` of [T, H, W] = [4, 2, 2] that covers the
    8 frequency pairs exactly, deepstack features taken from vision block 0 (the default indexes lie beyond depth 2
    and would be silently unused), position embeddings for an 8x8 patch grid."""
    tokenizer = _qwen2_tokenizer(_QWEN_TOKENS, eos="<|im_end|>", pad="<|endoftext|>")
    processor = Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(**_QWEN_SIZES), tokenizer=tokenizer,
                                 video_processor=Qwen3VLVideoProcessor(**_QWEN_SIZES),
                                 chat_template=_QWEN3_VL_TEMPLATE)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True}
    config = Qwen3VLConfig(
        text_config=_text(tokenizer, "<|im_end|>", head_dim=TEXT_HIDDEN // _TEXT["num_attention_heads"],
                          rope_parameters=rope),
        vision_config=_qwen_vision(hidden_size=VISION_HIDDEN, intermediate_size=64, out_hidden_size=TEXT_HIDDEN,
                                   num_position_embeddings=64, deepstack_visual_indexes=[0]),
        **_qwen_ids(tokenizer),
    )
    return processor, config, Qwen3VLForConditionalGeneration


def _idefics3() -> tuple[ProcessorMixin, Any, type[PreTrainedModel]]:
    """Idefics3: a SigLIP-like tower, a pixel-shuffle connector (scale 2) and a Llama text model; the processor's
    ``image_seq_len`` is the connector's output length, (32/8)^2 / 2^2 = 4."""
    special = ("<|begin_of_text|>", "<|end_of_text|>", "<pad>", *_IDEFICS_TOKENS)
    tokenizer = _fast_tokenizer(special, eos="<end_of_utterance>", pad="<pad>", bos="<|begin_of_text|>",
                                add_bos=True)
    processor = Idefics3Processor(image_processor=Idefics3ImageProcessor(**_IDEFICS_SIZES), tokenizer=tokenizer,
                                  image_seq_len=_IDEFICS_SEQ_LEN, chat_template=_IDEFICS3_TEMPLATE)
    config = Idefics3Config(
        vision_config=dict(_VISION), text_config=dict(_text(tokenizer, "<end_of_utterance>"), model_type="llama"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=_IDEFICS_SCALE,
    )
    return processor, config, Idefics3ForConditionalGeneration


def _smolvlm() -> tuple[ProcessorMixin, Any, type[PreTrainedModel]]:
    """SmolVLM: Idefics3's layout with SmolLM2 text; its processor also needs a video processor and ``num2words``."""
    special = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", *_IDEFICS_TOKENS, "<video>")
    tokenizer = _fast_tokenizer(special, eos="<end_of_utterance>", pad="<|endoftext|>", bos="<|im_start|>",
                                fake_image_token="<fake_token_around_image>", image_token="<image>",
                                end_of_utterance_token="<end_of_utterance>", global_image_token="<global-img>",
                                video_token="<video>")
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(**_IDEFICS_SIZES), tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(size={"longest_edge": IMAGE_SIZE},
                                              max_image_size={"longest_edge": IMAGE_SIZE}),
        image_seq_len=_IDEFICS_SEQ_LEN, chat_template=_SMOLVLM_TEMPLATE,
    )
    config = SmolVLMConfig(
        vision_config=dict(_VISION), text_config=dict(_text(tokenizer, "<end_of_utterance>"), model_type="llama"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=_IDEFICS_SCALE,
    )
    return processor, config, SmolVLMForConditionalGeneration


def _llava_onevision() -> tuple[ProcessorMixin, Any, type[PreTrainedModel]]:
    """LLaVA-OneVision: a SigLIP tower (no class token: the "full" strategy), Qwen2 text, a 32 px base view plus
    the crops of the best ``image_grid_pinpoints`` resolution, which config and image processor must share."""
    special = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
    tokenizer = _qwen2_tokenizer(special, eos="<|im_end|>", pad="<|endoftext|>", image_token="<image>",
                                 video_token="<video>")
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=_ONEVISION_PINPOINTS),
        tokenizer=tokenizer, video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(IMAGE_SIZE // PATCH) ** 2, vision_feature_select_strategy="full",
        chat_template=_LLAVA_ONEVISION_TEMPLATE,
    )
    image, video = _ids(tokenizer, "<image>", "<video>")
    config = LlavaOnevisionConfig(
        vision_config=dict(_VISION, model_type="siglip_vision_model"),
        text_config=dict(_text(tokenizer, "<|im_end|>"), model_type="qwen2"),
        image_token_index=image, video_token_index=video, image_grid_pinpoints=_ONEVISION_PINPOINTS,
        vision_feature_select_strategy="full", vision_feature_layer=-1,
    )
    return processor, config, LlavaOnevisionForConditionalGeneration


def _gemma3() -> tuple[ProcessorMixin, Any, type[PreTrainedModel]]:
    """Gemma 3: a SigLIP tower whose 4x4 patches are average-pooled to ``mm_tokens_per_image`` = 4 tokens, which
    must equal the processor's ``image_seq_length``; ``head_dim`` set (its default is 256). As in the real model, a
    sliding-window layer (window 512; the real one is 1024) and a global one."""
    tokenizer = _gemma_tokenizer()
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer, image_seq_length=_POOLED_TOKENS, chat_template=_GEMMA3_TEMPLATE,
    )
    boi, eoi, image = _ids(tokenizer, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    head_dim = TEXT_HIDDEN // _TEXT["num_attention_heads"]
    config = Gemma3Config(
        vision_config=dict(_VISION, model_type="siglip_vision_model"),
        text_config=_text(tokenizer, "<end_of_turn>", head_dim=head_dim, query_pre_attn_scalar=head_dim,
                          sliding_window=512, layer_types=["sliding_attention", "full_attention"]),
        mm_tokens_per_image=_POOLED_TOKENS, boi_token_index=boi, eoi_token_index=eoi, image_token_index=image,
    )
    return processor, config, Gemma3ForConditionalGeneration


def _internvl() -> tuple[ProcessorMixin, Any, type[PreTrainedModel]]:
    """InternVL 3: an InternViT tower, pixel shuffle by ``downsample_ratio`` 0.5 (16 patches to 4 tokens, the
    processor's ``image_seq_length``), Qwen2 text; ``GotOcr2ImageProcessor`` tiles an image into at most 4 views of
    32 px plus a thumbnail, 4 tokens each."""
    special = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>")
    tokenizer = _qwen2_tokenizer(special, eos="<|im_end|>", pad="<|endoftext|>", start_image_token="<img>",
                                 end_image_token="</img>", context_image_token="<IMG_CONTEXT>",
                                 video_token="<video>")
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=True, max_patches=_INTERNVL_TILES),
        tokenizer=tokenizer, video_processor=InternVLVideoProcessor(size=size),
        image_seq_length=_POOLED_TOKENS, chat_template=_INTERNVL_TEMPLATE,
    )
    config = InternVLConfig(
        vision_config=dict(hidden_size=VISION_HIDDEN, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=[IMAGE_SIZE, IMAGE_SIZE], patch_size=[PATCH, PATCH]),
        text_config=dict(_text(tokenizer, "<|im_end|>"), model_type="qwen2"),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=_POOLED_TOKENS,
        downsample_ratio=0.5,
    )
    return processor, config, InternVLForConditionalGeneration


_BUILDERS: dict[str, Callable[[], tuple[ProcessorMixin, Any, type[PreTrainedModel]]]] = {
    "llava": _llava, "qwen2_vl": _qwen2_vl, "qwen2_5_vl": _qwen2_5_vl, "qwen3_vl": _qwen3_vl,
    "idefics3": _idefics3, "smolvlm": _smolvlm, "llava_onevision": _llava_onevision, "gemma3": _gemma3,
    "internvl": _internvl,
}


def build_tiny_family(name: str, directory: Path, seed: int = 0) -> Path:
    """Build a tiny random model of family ``name`` with its processor and save both into ``directory``.

    The directory then loads like a real checkpoint: ``AutoModelForImageTextToText.from_pretrained(directory)`` and
    ``AutoProcessor.from_pretrained(directory)``. The generation config stops at ``END_OF_TURN[name]`` and pads
    with the tokenizer's pad token. ``seed`` makes the weights reproducible without touching the global random state.
    """
    processor, config, model_class = _BUILDERS[_check_family(name)]()
    tokenizer = processor.tokenizer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.convert_tokens_to_ids(END_OF_TURN[name]),
        pad_token_id=tokenizer.pad_token_id,
    )
    directory = Path(directory)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
