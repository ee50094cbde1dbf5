"""``add_adapters`` trains the parameters its method created, found by module type, and nothing else: a base model's
own ``experts``/``gate``/``router`` modules (Qwen3-VL-MoE's sparse MLP) stay frozen and out of the adapter file."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.inject import adapter_parameters, add_adapters
from rode_lightning.adapters.saving import WEIGHTS_NAME, load_adapter, save_adapter

ADAPTERS = [AdapterConfig(method="rode", ranks=[2, 4], target_modules=["q_proj", "v_proj"]),
            AdapterConfig(method="lora", ranks=[4], target_modules=["q_proj", "v_proj"])]


def tiny_qwen3_vl_moe() -> Qwen3VLMoeForConditionalGeneration:
    """Built from its config (nothing downloaded): 2 text layers, each with a sparse MLP of 4 experts."""
    torch.manual_seed(0)
    config = Qwen3VLMoeConfig(
        text_config=dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, moe_intermediate_size=32,
                         num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [4, 2, 2], "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=4,
                           out_hidden_size=64, num_position_embeddings=16, deepstack_visual_indexes=[1]),
        image_token_id=120, video_token_id=121, vision_start_token_id=122, vision_end_token_id=123)
    return Qwen3VLMoeForConditionalGeneration(config)


def expected_adapter_names(model: nn.Module, adapted: list[str], method: str) -> set[str]:
    """What the method put under each adapted layer, by name: independent of ``adapter_parameters``' types."""
    parts = ("experts", "router") if method != "lora" else ("lora_A", "lora_B")
    return {name for name, _ in model.named_parameters()
            if any(name.startswith(f"{layer}.{part}.") for layer in adapted for part in parts)}


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda adapter: adapter.method)
def test_a_moe_base_keeps_its_own_experts_frozen_and_out_of_the_adapter(tmp_path, adapter):
    model = tiny_qwen3_vl_moe()
    base_moe = {name for name, _ in model.named_parameters() if ".mlp.experts." in name or ".mlp.gate." in name}
    assert {name.rsplit(".", 1)[-1] for name in base_moe} == {"gate_up_proj", "down_proj", "weight"}
    assert len(base_moe) == 2 * 3  # experts' gate_up_proj and down_proj, the gate's weight, per text layer

    adapted = add_adapters(model, adapter)
    assert adapted == [f"model.language_model.layers.{i}.self_attn.{p}" for p in ("q_proj", "v_proj") for i in range(2)]
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    expected = expected_adapter_names(model, adapted, adapter.method)
    assert expected and trainable == expected == set(adapter_parameters(model))
    assert not trainable & base_moe

    # A step trains the adapters only: the base's experts get no gradient.
    model.train()
    input_ids = torch.randint(0, 100, (2, 6))
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    parameters = dict(model.named_parameters())
    assert all(parameters[name].grad is None for name in base_moe)
    assert any(parameters[name].grad is not None and parameters[name].grad.abs().sum() > 0 for name in expected)

    with torch.no_grad():  # values no fresh model starts with, as training would leave
        for name in expected:
            parameters[name].normal_()
    save_adapter(model, adapter, tmp_path)
    assert set(load_file(tmp_path / WEIGHTS_NAME)) == expected
    # And the file loads back into a fresh model of the same base.
    fresh = tiny_qwen3_vl_moe()
    add_adapters(fresh, adapter)
    load_adapter(fresh, adapter, tmp_path)
    fresh_parameters = dict(fresh.named_parameters())
    for name in expected:
        torch.testing.assert_close(fresh_parameters[name], parameters[name], rtol=0, atol=0)


class OwnRouter(nn.Module):
    """A base whose own layer is called ``router``, the name of the mixtures' router: a substring test on the
    parameter name (``.router.``) would train it."""

    def __init__(self):
        super().__init__()
        self.block = nn.ModuleDict({"q_proj": nn.Linear(8, 8), "router": nn.Linear(8, 8)})


def test_a_base_module_named_router_stays_frozen():
    model = nn.Sequential(OwnRouter())
    add_adapters(model, AdapterConfig(method="softmax", ranks=[2, 2], target_modules=["q_proj"]))
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == {"0.block.q_proj.experts.lora_A", "0.block.q_proj.experts.lora_B",
                         "0.block.q_proj.router.linear.weight"}
    assert not model[0].block["router"].weight.requires_grad
