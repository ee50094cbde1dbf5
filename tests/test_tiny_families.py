"""The tiny models of tests/tiny_families.py load like real checkpoints and behave like their families where our
conversation format relies on it: the prompt is a token prefix of the whole conversation, the answer ends with the
family's end-of-turn token, and a left-padded batch gives each row what the row gives alone."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from tests.tiny_families import END_OF_TURN, FAMILIES, build_tiny_family, family_chat_template

QUESTION = "What dish is shown in the image?"
# A one-line answer, and one with a newline and digits (which must not merge with what surrounds them).
ANSWERS = ("Ramen with egg.", "About 450 kcal\n20 g protein")


def _image(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _messages(question: str, answer: str | None = None, plain_answer: bool = False) -> list[dict]:
    """What our conversation format gives a chat template: an image part without the image (the processor gets the
    image separately), then the question; the answer as parts, or as a plain string."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    if answer is not None:
        content = answer if plain_answer else [{"type": "text", "text": answer}]
        messages.append({"role": "assistant", "content": content})
    return messages


@pytest.fixture(scope="module", params=FAMILIES)
def built(request, tmp_path_factory):
    """One family built once per module: (name, directory, build seconds, global RNG state before and after)."""
    name = request.param
    before = torch.random.get_rng_state()
    start = time.perf_counter()
    directory = build_tiny_family(name, tmp_path_factory.mktemp(name), seed=0)
    seconds = time.perf_counter() - start
    return name, directory, seconds, before, torch.random.get_rng_state()


@pytest.fixture(scope="module")
def loaded(built):
    name, directory, *_ = built
    return name, AutoProcessor.from_pretrained(directory), AutoModelForImageTextToText.from_pretrained(directory).eval()


def _render(processor, messages: list[dict], prompt: bool) -> str:
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)


def _ids(processor, text: str, image: Image.Image) -> list[int]:
    return processor(text=text, images=[image], return_tensors="pt")["input_ids"][0].tolist()


def test_builds_fast_and_reloads_through_auto_classes(built, loaded):
    name, directory, seconds, rng_before, rng_after = built
    _, processor, model = loaded
    print(f"{name}: built and saved in {seconds:.2f} s")
    assert seconds < 10
    # Seeding the weights went through a forked generator: the caller's random stream is untouched.
    assert torch.equal(rng_before, rng_after)
    assert type(model).__name__.endswith("ForConditionalGeneration") and model.config.model_type == name
    assert processor.chat_template == family_chat_template(name)
    tokenizer = processor.tokenizer
    text_config = model.config.get_text_config()
    assert text_config.vocab_size % 64 == 0 and len(tokenizer) <= text_config.vocab_size < len(tokenizer) + 64
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN[name])
    assert tokenizer.convert_ids_to_tokens(end_of_turn) == END_OF_TURN[name]
    assert model.generation_config.eos_token_id == end_of_turn
    assert tokenizer.pad_token_id is not None and model.generation_config.pad_token_id == tokenizer.pad_token_id
    # The model finds image positions by this id: it must be a real, whole token of the tokenizer.
    image_token = tokenizer.convert_ids_to_tokens(model.config.image_token_id)
    assert tokenizer(image_token, add_special_tokens=False)["input_ids"] == [model.config.image_token_id]
    # The same seed gives the same weights (checked on the reloaded copy against a second build).
    again = build_tiny_family(name, directory.parent / f"{name}-again", seed=0)
    twin = AutoModelForImageTextToText.from_pretrained(again)
    for (key, value), (_, other) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(value, other), key


def test_unknown_family_is_refused_with_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"family: 'llama' is not a tiny family; expected one of llava, qwen2_vl"):
        build_tiny_family("llama", tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("answer", ANSWERS)
@pytest.mark.parametrize("plain_answer", [False, True], ids=["parts", "string"])
def test_prompt_is_a_token_prefix_and_the_answer_ends_the_turn(loaded, answer, plain_answer):
    name, processor, model = loaded
    image = _image(48, 64, 1)
    prompt = _render(processor, _messages(QUESTION), prompt=True)
    whole = _render(processor, _messages(QUESTION, answer, plain_answer), prompt=False)
    assert isinstance(prompt, str) and whole.startswith(prompt)
    prompt_ids, whole_ids = _ids(processor, prompt, image), _ids(processor, whole, image)
    assert whole_ids[: len(prompt_ids)] == prompt_ids
    # The processor expanded the image into image tokens, in the prompt, so before the answer.
    image_tokens = prompt_ids.count(model.config.image_token_id)
    assert image_tokens > 1 and whole_ids.count(model.config.image_token_id) == image_tokens
    rest = whole_ids[len(prompt_ids):]
    end_of_turn = processor.tokenizer.convert_tokens_to_ids(END_OF_TURN[name])
    assert end_of_turn in rest
    assert processor.tokenizer.decode(rest[: rest.index(end_of_turn)]).strip() == answer


@pytest.mark.parametrize("size", [(640, 480), (30, 400)], ids=["large", "tall"])
def test_any_image_gives_few_image_tokens(loaded, size):
    """The processor settings bound every image (by resizing, or a bounded number of tiles), so tests stay small
    whatever image they use."""
    name, processor, model = loaded
    prompt = _render(processor, _messages(QUESTION), prompt=True)
    count = _ids(processor, prompt, _image(*size, seed=2)).count(model.config.image_token_id)
    assert 0 < count <= 100, f"{name}: {count} image tokens for a {size} image"


def test_forward_loss_and_generate(loaded):
    name, processor, model = loaded
    image = _image(32, 32, 0)
    prompt = _render(processor, _messages(QUESTION), prompt=True)
    prompt_ids = _ids(processor, prompt, image)
    inputs = processor(text=_render(processor, _messages(QUESTION, ANSWERS[0]), prompt=False), images=[image],
                       return_tensors="pt")
    labels = inputs["input_ids"].clone()
    labels[:, : len(prompt_ids)] = -100
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    assert torch.isfinite(out.loss)
    # The loss is the next-token cross-entropy over the answer only: recomputed here from the logits.
    expected = F.cross_entropy(out.logits[0, :-1].float(), labels[0, 1:], ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)

    inputs = processor(text=prompt, images=[image], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    length = inputs["input_ids"].shape[1]
    assert length < generated.shape[1] <= length + 3
    assert torch.equal(generated[:, :length], inputs["input_ids"])


def test_left_padded_batch_rows_equal_each_conversation_alone(loaded):
    name, processor, model = loaded
    # Two image sizes (so two token counts for the families that tile or resize by size) and two question lengths.
    conversations = [(_messages("What dish is this?"), _image(32, 32, 0)),
                     (_messages("How many calories does this meal have?"), _image(48, 64, 1))]
    texts = [_render(processor, messages, prompt=True) for messages, _ in conversations]
    batch = processor(text=texts, images=[[image] for _, image in conversations], padding=True,
                      padding_side="left", return_tensors="pt")
    mask = batch["attention_mask"]
    assert mask[:, -1].all() and not mask[:, 0].all() and mask.sum(1)[0] != mask.sum(1)[1]
    with torch.no_grad():
        batched = model(**batch).logits[:, -1]
        for row, (text, (_, image)) in enumerate(zip(texts, conversations)):
            alone = model(**processor(text=[text], images=[image], return_tensors="pt")).logits[0, -1]
            torch.testing.assert_close(batched[row], alone, atol=1e-5, rtol=0)
