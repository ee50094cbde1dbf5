"""The inference engine on both bases: the answers predict gives, each row as alone, why an answer ended, stop strings,
and the routing behind an answer equal to the gates a teacher-forced forward computes at the same positions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.inject import adapter_layers
from rode_lightning.callbacks.router_sparsity import short_layer_names
from rode_lightning.inference import InferenceEngine, Request
from rode_lightning.inference.engine import question_of
from rode_lightning.model.module import FoodLMMModule
from rode_lightning.model.transformers_base import TransformersConfig
from rode_lightning.model.vision import VisionConfig
from tests.tiny_vlm import IM_END, save_tiny_qwen2vl


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    return save_tiny_qwen2vl(tmp_path_factory.mktemp("qwen2vl"))


def built(base: str, qwen_dir: Path, method: str = "rode", ranks=(2, 4, 8, 16)) -> FoodLMMModule:
    torch.manual_seed(0)
    adapter = AdapterConfig(method=method, ranks=list(ranks), target_modules=["q_proj", "v_proj"], dropout=0.0)
    if base == "transformers":
        module = FoodLMMModule(base="transformers", adapter=adapter, max_new_tokens=6,
                               transformers=TransformersConfig(path=str(qwen_dir), dtype="fp32", end_of_turn=IM_END))
    else:
        module = FoodLMMModule(vision=VisionConfig(image_size=32, patch_size=16, width=32, layers=2, head_width=16),
                               adapter=adapter, max_new_tokens=6)
    module.configure_model()
    with torch.no_grad():  # trained-like adapters: non-zero B, so the experts change the answers
        for parameter in module.model.trainable_parameters().values():
            parameter.normal_(std=0.2)
    return module.eval()


def requests() -> list[Request]:
    return [Request(Image.new("RGB", (32, 32), (200, 40, 40)), task="ingredients", id="a"),
            Request(Image.new("RGB", (64, 48), (30, 160, 90)), question="What dish is this?", id="b")]


@pytest.mark.parametrize("base", ["llava", "transformers"])
def test_answers_are_predicts_and_each_row_is_answered_as_alone(base, qwen_dir):
    module = built(base, qwen_dir)
    engine = InferenceEngine(module)
    together = engine.answer(requests())
    alone = [engine.answer([request])[0] for request in requests()]
    assert [answer.text for answer in together] == [answer.text for answer in alone]
    batch = module.conversation_format(_conversations(engine))
    assert [answer.text for answer in together] == module.generate_answers(batch)
    first = together[0]
    assert first.completion_tokens >= 1 and first.prompt_tokens > 0
    assert set(first.parsed) == {"ingredients"} and together[1].parsed == {}
    assert first.finish_reason in ("stop", "length")


def _conversations(engine: InferenceEngine):
    from rode_lightning.data.conversation import single_turn

    return [single_turn(request.image, question_of(request), None, id=request.id, dataset="request",
                        task=request.task) for request in requests()]


@pytest.mark.parametrize("base", ["llava", "transformers"])
def test_the_routing_is_what_a_teacher_forced_forward_computes_at_those_positions(base, qwen_dir):
    module = built(base, qwen_dir)
    engine = InferenceEngine(module)
    request = requests()[1]
    [answer] = engine.answer([request])
    layers = adapter_layers(module.model.language_model)
    assert len(answer.routing) == len(layers) and answer.completion_tokens >= 2
    # The prompt and the generated tokens as one sequence, run teacher-forced: the gates at the positions that
    # produced each generated token (the prompt's last, then each generated token but the last).
    prompt = module.conversation_format(_conversations(engine)[1:])
    tokens = [*prompt.prompt_ids[0].tolist(), *_generated_ids(engine, request)]
    whole = replace(prompt, input_ids=torch.tensor([tokens]), attention_mask=torch.ones(1, len(tokens), dtype=torch.long))
    with torch.no_grad():
        module.forward_batch(whole)
    start = prompt.prompt_ids.shape[1] - 1
    names = short_layer_names(list(layers))
    for name, layer in layers.items():
        short = names[name]
        expected = layer.last_gates.reshape(len(tokens), -1)[start: start + answer.completion_tokens]
        torch.testing.assert_close(torch.tensor(answer.token_routing[short]), expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(torch.tensor(answer.routing[short]), expected.mean(dim=0), atol=1e-5, rtol=1e-4)
        assert (expected >= 0).all()  # RoDE's ReLU gates


def _generated_ids(engine: InferenceEngine, request: Request) -> list[int]:
    from rode_lightning.model.generation import generate

    batch = engine.module.conversation_format(_conversations(engine)[1:])
    return generate(engine.module.model, batch, engine.module.hparams.max_new_tokens)[0].token_ids


def test_length_stop_strings_and_a_plain_lora_without_routing(qwen_dir):
    module = built("transformers", qwen_dir)
    engine = InferenceEngine(module)
    [short] = engine.answer([replace(requests()[1], max_new_tokens=1)])
    assert short.finish_reason == "length" and short.completion_tokens == 1
    [whole] = engine.answer([requests()[1]])
    if len(whole.text) > 2:
        cut = whole.text[1:3]
        [stopped] = engine.answer([replace(requests()[1], stop=(cut,))])
        assert stopped.finish_reason == "stop" and stopped.text == whole.text[: whole.text.index(cut)].rstrip()
    im_end = module.tokenizer.convert_tokens_to_ids(IM_END)
    handle = module.model.hf.lm_head.register_forward_hook(lambda _, __, logits: logits.index_add(
        -1, torch.tensor([im_end]), torch.full((*logits.shape[:-1], 1), 1e4)))
    try:
        [ended] = engine.answer([requests()[1]])
    finally:
        handle.remove()
    assert ended.finish_reason == "stop" and ended.text == "" and ended.completion_tokens == 1

    lora = InferenceEngine(built("transformers", qwen_dir, method="lora", ranks=(4,)))
    [answer] = lora.answer([requests()[0]])
    assert answer.routing == {} and answer.token_routing == {} and isinstance(answer.text, str)


def test_a_request_without_question_or_task_is_refused(qwen_dir):
    from rode_lightning.user_errors import UserError

    engine = InferenceEngine(built("transformers", qwen_dir))
    with pytest.raises(UserError, match="give a question or a task"):
        engine.answer([Request(Image.new("RGB", (32, 32)), id="empty")])


@pytest.mark.parametrize("base", ["llava", "transformers"])
def test_a_streamed_answer_joins_to_the_answer(base, qwen_dir):
    engine = InferenceEngine(built(base, qwen_dir))
    for request in requests():
        [expected] = engine.answer([request])
        events = list(engine.stream(request))
        assert [event.answer is None for event in events] == [True] * (len(events) - 1) + [False]
        assert "".join(event.delta for event in events) == expected.text == events[-1].answer.text
        assert all(event.delta for event in events[:-1])
        assert events[-1].answer.routing.keys() == expected.routing.keys()
        for name, gates in expected.routing.items():
            assert events[-1].answer.routing[name] == pytest.approx(gates)
        if len(expected.text) > 3:  # a stop string: nothing after it is ever sent
            stop = expected.text[2:4]
            stopped = list(engine.stream(replace(request, stop=(stop,))))
            joined = "".join(event.delta for event in stopped)
            assert joined == stopped[-1].answer.text == expected.text[: expected.text.index(stop)].rstrip()


def test_a_stream_left_early_stops_its_generation(qwen_dir):
    module = built("transformers", qwen_dir)
    engine = InferenceEngine(module)
    forwards = []
    module.model.hf.lm_head.register_forward_hook(lambda *args: forwards.append(1))
    request = replace(requests()[1], max_new_tokens=40)
    [whole] = engine.answer([request])
    whole_forwards = len(forwards)
    forwards.clear()
    stream = engine.stream(request)
    next(stream)
    stream.close()  # a client that went away: close() returns once the generation stopped
    assert whole.completion_tokens > 10 and len(forwards) < whole_forwards / 2, (len(forwards), whole_forwards)
    [answer] = engine.answer([requests()[1]])
    assert "".join(event.delta for event in engine.stream(requests()[1])) == answer.text


def test_a_streamed_batch_gives_each_row_its_answer_and_drops_the_rows_given_up(qwen_dir):
    module = built("transformers", qwen_dir)
    engine = InferenceEngine(module)
    batch = [replace(request, max_new_tokens=limit) for request, limit in zip(requests(), (5, 30))]
    alone = [engine.answer([request])[0] for request in batch]
    steps = list(engine.stream_batch(batch))
    for row, expected in enumerate(alone):
        events = [step[row] for step in steps if step[row] is not None]
        assert "".join(event.delta for event in events) == expected.text == events[-1].answer.text
        assert events[-1].answer.completion_tokens == expected.completion_tokens
    # Row 1 given up after its third token: it gets nothing more and no answer; row 0 is answered as alone.
    asked: dict[int, int] = {}

    def stopped(row: int) -> bool:
        asked[row] = asked.get(row, 0) + 1
        return row == 1 and asked[row] > 3

    steps = list(engine.stream_batch(batch, stopped=stopped))
    assert steps[-1][1] is None and all(step[1] is None or step[1].answer is None for step in steps)
    assert "".join(step[0].delta for step in steps if step[0] is not None) == alone[0].text
    # Every row given up: the generation stops at once, far short of row 1's 30 tokens.
    forwards = []
    module.model.hf.lm_head.register_forward_hook(lambda *args: forwards.append(1))
    assert list(engine.stream_batch(batch, stopped=lambda row: True)) == []
    assert len(forwards) <= 3, len(forwards)


@pytest.mark.parametrize("base", ["llava", "transformers"])
def test_a_positive_temperature_samples_reproducibly_for_a_seed(base, qwen_dir):
    engine = InferenceEngine(built(base, qwen_dir))
    request = replace(requests()[1], max_new_tokens=6)
    [greedy] = engine.answer([request])
    hot = replace(request, temperature=3.0)
    draws = []
    for seed in (1, 1, 2, 3):
        torch.manual_seed(seed)
        draws.append(engine.answer([hot])[0].text)
    assert draws[0] == draws[1]  # the same seed, the same sample
    assert any(text != greedy.text for text in draws)  # at temperature 3 six tokens are rarely the greedy ones
    with pytest.raises(ValueError, match="share one temperature"):
        engine.answer([request, hot])


def test_only_what_cannot_change_is_sent():
    from rode_lightning.inference.engine import _safe_prefix

    assert _safe_prefix("rice and be\ufffd", ()) == "rice and be"  # half a character: wait for the rest
    assert _safe_prefix("rice  ", ()) == "rice"  # the answer is stripped: trailing space may never be sent
    assert _safe_prefix("rice, bea", ("beans",)) == "rice,"  # may be the start of a stop string
    assert _safe_prefix("rice, bea", ("Total",)) == "rice, bea"
