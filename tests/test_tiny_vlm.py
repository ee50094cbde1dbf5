"""The tiny offline Qwen2-VL of tests/tiny_vlm.py behaves like the real one where other tests rely on it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny_vlm import (
    IM_END, IMAGE_PAD, MERGE_SIZE, SPECIAL_TOKENS, VISION_END, VISION_START, qwen_conversation, tiny_qwen2vl_model,
    tiny_qwen2vl_processor,
)


def _image(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    return tiny_qwen2vl_processor(tmp_path_factory.mktemp("tiny_qwen2vl"))


@pytest.fixture(scope="module")
def model(processor):
    return tiny_qwen2vl_model(processor)


@pytest.fixture(scope="module")
def conversations():
    return [
        qwen_conversation(_image(32, 32, 0), "What dish is this?"),
        qwen_conversation(_image(48, 64, 1), "How many calories does this meal have?"),
    ]


def _encode(processor, conversations):
    """The batch a generation step sees: left padded, so every row ends at its generation prompt. Padding goes in
    ``processor_kwargs`` (transformers 5.x warns when processor options are passed as plain keywords)."""
    processor.tokenizer.padding_side = "left"
    return processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt", processor_kwargs={"padding": True})


def test_tokenizer_round_trips_any_text_and_keeps_special_tokens_whole(processor):
    tokenizer = processor.tokenizer
    text = "Crème brûlée 🍮, 450 kcal\n" + "".join(SPECIAL_TOKENS)
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert ids[-len(SPECIAL_TOKENS):] == tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == "<|endoftext|>"


def test_chat_template_has_qwen_structure(processor):
    messages = qwen_conversation(None, "What dish is this?", "Ramen.")
    assert processor.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What dish is this?<|im_end|>\n"
        "<|im_start|>assistant\nRamen.<|im_end|>\n"
    )
    prompt = processor.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("What dish is this?<|im_end|>\n<|im_start|>assistant\n")


def test_batch_of_two_image_sizes_has_one_pad_token_per_merged_patch(processor, conversations):
    batch = _encode(processor, conversations)
    grid = batch["image_grid_thw"]
    assert grid.shape == (2, 3)
    # Different sizes give different grids: the 32x32 image 4x4 patches, the 48x64 one 8x6.
    assert grid.tolist() == [[1, 4, 4], [1, 8, 6]]
    assert batch["pixel_values"].ndim == 2 and batch["pixel_values"].shape[0] == int(grid.prod(-1).sum())
    ids = batch["input_ids"]
    tokenizer = processor.tokenizer
    image_pad = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    for row, thw in zip(ids, grid):
        assert int((row == image_pad).sum()) == int(thw.prod()) // MERGE_SIZE**2
        assert int((row == tokenizer.convert_tokens_to_ids(VISION_START)).sum()) == 1
        assert int((row == tokenizer.convert_tokens_to_ids(VISION_END)).sum()) == 1
    # Left padding: the shorter row's padding comes first, so both rows end at the generation prompt.
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].all()


def test_model_forward_and_generate(processor, model, conversations):
    batch = _encode(processor, conversations)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert model.config.text_config.vocab_size % 64 == 0 and model.config.text_config.vocab_size >= len(processor.tokenizer)
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 2 and batch["input_ids"].shape[1] < out.shape[1] <= batch["input_ids"].shape[1] + 3


def test_each_batched_row_equals_its_conversation_alone(processor, model, conversations):
    batch = _encode(processor, conversations)
    with torch.no_grad():
        batched = model(**batch).logits[:, -1]
        for i, conversation in enumerate(conversations):
            alone = model(**_encode(processor, [conversation])).logits[0, -1]
            torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=0)
