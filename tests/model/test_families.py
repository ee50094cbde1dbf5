"""Issue 25's acceptance on every family tests/tiny_families.py builds (llava-hf, Qwen2/2.5/3-VL, Idefics3, SmolVLM,
LLaVA-OneVision, Gemma 3, InternVL), through model.base: transformers: RoDE trains with falling loss, no adapter
outside the language model, generate answers, a batch of two images of different sizes gives each row what it gets
alone, and a saved adapter reloads with equal outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.saving import load_adapter, save_adapter
from rode_lightning.conventions import IGNORE_INDEX
from rode_lightning.model.module import FoodLMMModule
from rode_lightning.model.transformers_base import TransformersConfig
from tests.tiny_families import END_OF_TURN, FAMILIES, build_tiny_family
from tests.tiny_vlm import two_conversations as conversations


def build(directory: Path, family: str, seed: int) -> FoodLMMModule:
    torch.manual_seed(seed)
    module = FoodLMMModule(base="transformers", adapter=AdapterConfig(target_modules=["all-linear"]),
                           transformers=TransformersConfig(path=str(directory), dtype="fp32",
                                                           end_of_turn=END_OF_TURN[family]))
    module.configure_model()
    return module


@pytest.mark.parametrize("family", FAMILIES)
def test_rode_on_the_family(family, tmp_path):
    directory = build_tiny_family(family, tmp_path / family)
    module = build(directory, family, seed=0)
    model, spell = module.model, module.conversation_format

    # adapters only in the language model; the answer and its end-of-turn token are the labels
    language_prefix = next(name for name, part in model.named_modules() if part is model.language_model) + "."
    adapters = [name for name in model.trainable_parameters() if ".experts." in name or ".router." in name]
    assert adapters and all(name.startswith(language_prefix) for name in adapters), adapters[:3]
    batch = spell(conversations())
    end_of_turn = module.tokenizer.convert_tokens_to_ids(END_OF_TURN[family])
    for row in range(len(batch)):
        labels = batch.labels[row][batch.labels[row] != IGNORE_INDEX].tolist()
        assert labels[-1] == end_of_turn
        assert module.tokenizer.decode(labels[:-1]).strip() == batch.references[row]
    if batch.image_mask is not None:
        assert (batch.image_mask.sum(dim=1) > 0).all()  # the config's image token, expanded by the processor

    # a few steps of training lower the (dropout-free) loss every time
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=5e-3)

    def evaluated_loss() -> float:
        model.eval()
        with torch.no_grad():
            return module.answer_loss(batch).item()

    losses = [evaluated_loss()]
    for _ in range(3):
        model.train()
        for _ in range(2):
            loss = module.answer_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses.append(evaluated_loss())
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses

    # generation answers, and a batch of two sizes gives each row its answer alone
    model.eval()
    prompts = spell(conversations(answers=False))
    together = model.generate_batch(prompts, 4)
    answers = spell.decode(together)
    assert len(answers) == 2 and all(isinstance(answer, str) for answer in answers)
    logits = module.forward_batch(batch)
    for row, conversation in enumerate(conversations()):
        alone = spell([conversation])
        length = int(alone.attention_mask.sum())
        torch.testing.assert_close(module.forward_batch(alone)[0, :length], logits[row, :length],
                                   atol=1e-5, rtol=1e-5)
        single = model.generate_batch(spell([conversations(answers=False)[row]]), 4)[0].tolist()
        assert together[row].tolist()[: len(single)] == single

    # the trained adapter saved and reloaded into a freshly built model gives the same logits
    save_adapter(model, module.adapter_config, tmp_path / "adapter")
    fresh = build(directory, family, seed=1)
    fresh.model.eval()
    load_adapter(fresh.model, fresh.adapter_config, tmp_path / "adapter")
    torch.testing.assert_close(fresh.forward_batch(batch), logits)
