"""Conversation formats: LLaVA-1.5's spelling gives exactly the token ids and pixels of the code it replaced, and a
transformers processor's spelling (a tiny Qwen2-VL, built offline) batches images of different sizes."""

from __future__ import annotations

import open_clip
import pytest
import torch
from PIL import Image

from rode_lightning.conventions import IGNORE_INDEX, IMAGE_PLACEHOLDER, SYSTEM_PROMPT
from rode_lightning.data.conversation import Conversation, Turn, single_turn
from rode_lightning.data.datamodule import FoodDataModule
from rode_lightning.data.images import open_image
from rode_lightning.data.prompts import answer_for
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.model.formats import ChatTemplateFormat, LlavaFormat
from rode_lightning.user_errors import UserError

# ----------------------------------------------------------------------------- the spelling before formats existed
# The data side's code of the previous version (data/instructions.py), kept here as the reference the LLaVA format
# must reproduce token for token and pixel for pixel.


def reference_prompt(tokenizer, question: str, num_image_tokens: int) -> list[int]:
    before, after = f"{SYSTEM_PROMPT} USER: {IMAGE_PLACEHOLDER}\n{question} ASSISTANT:".split(IMAGE_PLACEHOLDER)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return (bos + tokenizer.encode(before, add_special_tokens=False)
            + [tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)] * num_image_tokens
            + tokenizer.encode(after, add_special_tokens=False))


def reference_item(tokenizer, transform, question: str, answer: str, image, num_image_tokens: int,
                   max_length: int) -> dict:
    prompt_ids = reference_prompt(tokenizer, question, num_image_tokens)
    answer_ids = tokenizer.encode(" " + answer, add_special_tokens=False) + [tokenizer.eos_token_id]
    with open_image(image) as opened:
        pixels = transform(opened.convert("RGB"))
    return {"input_ids": (prompt_ids + answer_ids)[:max_length],
            "labels": ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length],
            "prompt_ids": prompt_ids, "image": pixels}


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> FoodDataModule:
    sources = [{"dataset": "unifood", "demo_sizes": {"train": 12, "val": 4, "test": 4}},
               {"dataset": "nutrition5k", "demo_sizes": {"train": 32, "test": 8}}]
    module = FoodDataModule(demo_dir=str(tmp_path_factory.mktemp("formats_demo")), sources=sources, batch_size=4)
    module.setup("fit")
    return module


@pytest.mark.parametrize("max_length", [512, 90])  # 90 cuts the longer answers (recipes) short
def test_the_llava_format_spells_the_demo_data_as_before(demo_data, max_length):
    tokenizer = load_tokenizer("demo")
    spelling = LlavaFormat(tokenizer, image_size=32, num_image_tokens=4, max_length=max_length)
    transform = open_clip.image_transform(32, is_train=False)
    dataset = demo_data.datasets["train"]
    indices = list(range(0, len(dataset), 3))  # every task of both datasets
    assert {dataset.samples[i].task for i in indices} == {"category", "ingredients", "recipe", "nutrition"}
    batch = spelling([dataset[i] for i in indices])
    cut = 0
    for row, index in enumerate(indices):
        sample = dataset.samples[index]
        expected = reference_item(tokenizer, transform, dataset.question(index), answer_for(sample.record, sample.task),
                                  sample.record.image, 4, max_length)
        length = len(expected["input_ids"])
        cut += length == max_length
        assert batch.input_ids[row, :length].tolist() == expected["input_ids"]
        assert batch.attention_mask[row].sum() == length
        assert batch.labels[row, :length].tolist() == expected["labels"]
        assert (batch.labels[row, length:] == IGNORE_INDEX).all()
        prompt = batch.prompt_ids[row][batch.prompt_attention_mask[row].bool()].tolist()
        assert prompt == expected["prompt_ids"]
        assert torch.equal(batch.pixel_values[row], expected["image"])
        assert batch.answer_mask[row].tolist() == [int(label != IGNORE_INDEX) for label in batch.labels[row].tolist()]
        assert batch.image_mask[row].sum() == 4
        assert batch.references[row] == answer_for(sample.record, sample.task)
    assert (cut > 0) == (max_length == 90)


def test_a_prompt_longer_than_max_length_is_refused_naming_the_sample():
    image = Image.new("RGB", (40, 40))
    spelling = LlavaFormat(load_tokenizer("demo"), image_size=32, num_image_tokens=4, max_length=20)
    with pytest.raises(UserError, match="data.max_length: 20 is too short for the prompt of sample dish-7"):
        spelling([single_turn(image, "What dish is this?", "soup", id="dish-7", dataset="demo")])


def test_every_answer_of_a_multi_turn_conversation_is_trained_on():
    tokenizer = load_tokenizer("demo")
    spelling = LlavaFormat(tokenizer, image_size=32, num_image_tokens=4)
    turns = (Turn("user", "What dish is this?"), Turn("assistant", "pizza"), Turn("user", "What is in it?"),
             Turn("assistant", "cheese, tomato"))
    batch = spelling([Conversation(Image.new("RGB", (32, 32)), turns, id="a", dataset="chat")])
    labelled = batch.labels[0][batch.labels[0] != IGNORE_INDEX].tolist()
    first = tokenizer.encode(" pizza", add_special_tokens=False) + [tokenizer.eos_token_id]
    second = tokenizer.encode(" cheese, tomato", add_special_tokens=False) + [tokenizer.eos_token_id]
    assert labelled == first + second
    # Generation continues after the last question: the prompt is everything but the last answer.
    prompt = batch.prompt_ids[0][batch.prompt_attention_mask[0].bool()].tolist()
    assert batch.input_ids[0, :len(prompt)].tolist() == prompt
    assert batch.input_ids[0, len(prompt):batch.attention_mask[0].sum()].tolist() == second
    assert tokenizer.decode(prompt).endswith("What is in it? ASSISTANT:")


def test_a_batch_of_questions_has_prompts_only():
    spelling = LlavaFormat(load_tokenizer("demo"), image_size=32, num_image_tokens=4)
    batch = spelling([single_turn(Image.new("RGB", (32, 32)), "What dish is this?", None, id="q", dataset="predict",
                                  task="category")])
    assert not batch.has_answers and batch.input_ids is None and batch.labels is None
    with pytest.raises(ValueError, match="mixes conversations with and without a reference"):
        spelling([single_turn(Image.new("RGB", (32, 32)), "Q?", None, id="q", dataset="d"),
                  single_turn(Image.new("RGB", (32, 32)), "Q?", "A", id="r", dataset="d")])


# ----------------------------------------------------------------------------- a processor's own spelling


def test_a_qwen2_vl_processor_batches_two_images_of_different_sizes(tmp_path):
    from tests.tiny_vlm import IM_END, IMAGE_PAD, MERGE_SIZE, tiny_qwen2vl_processor

    processor = tiny_qwen2vl_processor(tmp_path / "processor")
    spelling = ChatTemplateFormat(processor, end_of_turn=IM_END)
    small, large = Image.new("RGB", (32, 32), (200, 30, 30)), Image.new("RGB", (64, 48), (30, 200, 30))
    conversations = [single_turn(small, "What dish is this?", "pizza", id="a", dataset="demo", task="category"),
                     single_turn(large, "What is in it?", "rice, egg", id="b", dataset="demo", task="ingredients")]
    batch = spelling(conversations)
    tokenizer = processor.tokenizer
    grid = batch.extra["image_grid_thw"]
    assert grid.shape == (2, 3) and grid[0].tolist() != grid[1].tolist()
    # Flattened patches: one row per patch of either image, each sample owning its share.
    assert batch.pixel_values.dim() == 2 and batch.pixel_rows.tolist() == grid.prod(dim=1).tolist()
    assert batch.pixel_values.shape[0] == int(grid.prod(dim=1).sum())
    image_pad = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    tokens_per_image = (grid.prod(dim=1) // MERGE_SIZE ** 2).tolist()
    assert batch.image_mask.sum(dim=1).tolist() == tokens_per_image
    assert ((batch.prompt_ids == image_pad).sum(dim=1)).tolist() == tokens_per_image
    # Labels: the answer and its end-of-turn token, nothing else; the prompt a prefix of the conversation.
    for row, answer in enumerate(["pizza", "rice, egg"]):
        labelled = batch.labels[row][batch.labels[row] != IGNORE_INDEX].tolist()
        assert tokenizer.decode(labelled) == answer + IM_END
        prompt = batch.prompt_ids[row][batch.prompt_attention_mask[row].bool()].tolist()
        assert batch.input_ids[row, :len(prompt)].tolist() == prompt
    # Selecting a row selects its patches: the same as the conversation batched alone.
    alone, selected = spelling(conversations[1:]), batch.select([1])
    assert torch.equal(selected.pixel_values, alone.pixel_values)
    assert torch.equal(selected.extra["image_grid_thw"], alone.extra["image_grid_thw"])
    assert torch.equal(selected.prompt_ids, alone.prompt_ids) and selected.ids == ["b"]


def test_formats_pickle_for_data_loader_workers_started_by_spawn(tmp_path):
    """The format is the loaders' collate function: with num_workers > 0 under spawn it travels to each worker."""
    import pickle

    from tests.tiny_vlm import IM_END, tiny_qwen2vl_processor

    image = Image.new("RGB", (32, 32), (10, 200, 10))
    conversation = single_turn(image, "What dish is this?", "pizza", id="a", dataset="demo", task="category")
    for spelling in (LlavaFormat(load_tokenizer("demo"), image_size=32, num_image_tokens=4),
                     ChatTemplateFormat(tiny_qwen2vl_processor(tmp_path / "processor"), end_of_turn=IM_END)):
        copy = pickle.loads(pickle.dumps(spelling))
        batch, again = spelling([conversation]), copy([conversation])
        assert torch.equal(batch.input_ids, again.input_ids) and torch.equal(batch.pixel_values, again.pixel_values)


def test_an_image_placeholder_in_the_question_is_not_a_second_image():
    """LLaVA-style datasets write "<image>\\n" before the first question; the format places the image once."""
    spelling = LlavaFormat(load_tokenizer("demo"), image_size=32, num_image_tokens=4)
    image = Image.new("RGB", (32, 32))
    plain = spelling([single_turn(image, "What dish is this?", "soup", id="a", dataset="d")])
    marked = spelling([single_turn(image, "<image>\nWhat dish is this?", "soup", id="a", dataset="d")])
    assert torch.equal(plain.input_ids, marked.input_ids) and marked.image_mask.sum() == 4
