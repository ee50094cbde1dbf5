"""Adapters under activation checkpointing and in bf16."""

from __future__ import annotations

import pytest
import torch

from rode_lightning.adapters.config import AdapterConfig
from tests.model.test_lmm import batch, build

METHODS = [AdapterConfig(), AdapterConfig(method="softmax"), AdapterConfig(method="top1", ranks=[4, 4, 4]),
           AdapterConfig(method="cluster", ranks=[4, 4], num_clusters=2), AdapterConfig(method="lora", ranks=[4])]


def loss_and_grads(model, inputs, clusters):
    model.zero_grad(set_to_none=True)
    logits = model(*inputs, clusters)
    auxiliary = model.auxiliary_loss()
    loss = logits.float().square().mean() + (auxiliary if auxiliary is not None else 0.0)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.trainable_parameters().items() if p.grad is not None}
    return loss.detach(), auxiliary, grads


@pytest.mark.parametrize("adapter", METHODS, ids=lambda config: config.method)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(adapter):
    torch.manual_seed(0)
    model = build(AdapterConfig(**{**adapter.__dict__, "dropout": 0.0}))
    with torch.no_grad():
        for parameter in model.trainable_parameters().values():
            parameter.normal_(std=0.1)
    model.train()
    inputs = batch(model)
    clusters = torch.tensor([0, 1]) if adapter.method == "cluster" else None
    calls = []
    # Inside the block: transformers checkpoints the block's forward, so hooks on the block itself fire once.
    model.language_model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda *args: calls.append(1))
    torch.manual_seed(1)  # MoCLE's gate noise: the same draws in both runs (checkpointing preserves RNG state)
    plain_loss, plain_aux, plain_grads = loss_and_grads(model, inputs, clusters)
    assert len(calls) == 1
    model.enable_activation_checkpointing()
    torch.manual_seed(1)
    checkpointed_loss, checkpointed_aux, checkpointed_grads = loss_and_grads(model, inputs, clusters)
    assert len(calls) == 3, "the layer was not recomputed: checkpointing is not active"
    torch.testing.assert_close(checkpointed_loss, plain_loss)
    if adapter.method == "top1":
        assert plain_aux is not None and checkpointed_aux is not None
        torch.testing.assert_close(checkpointed_aux, plain_aux)
        router_grads = [name for name in checkpointed_grads if ".router." in name]
        assert router_grads and all(checkpointed_grads[n].abs().sum() > 0 for n in router_grads)
    assert plain_grads.keys() == checkpointed_grads.keys() and plain_grads
    for name in plain_grads:
        torch.testing.assert_close(checkpointed_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("adapter", METHODS, ids=lambda config: config.method)
def test_bf16_forward_and_backward(adapter):
    model = build(adapter).to(torch.bfloat16)
    model.train()
    input_ids, mask, images = batch(model)
    clusters = torch.tensor([1, 0]) if adapter.method == "cluster" else None
    logits = model(input_ids, mask, images.to(torch.bfloat16), clusters)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    logits.float().square().mean().backward()
    grads = [p.grad for p in model.trainable_parameters().values()]
    assert all(g is not None and g.dtype == torch.bfloat16 and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("adapter", METHODS, ids=lambda config: config.method)
def test_a_bf16_base_model_gets_fp32_adapters(adapter):
    """`model.language.dtype: bf16` (the 7B setup): the frozen LLaMA is bf16, the trainable adapters stay fp32 so
    that small optimizer updates are not rounded away; forward and backward work without autocast."""
    from rode_lightning.data.tokenizer import load_tokenizer
    from rode_lightning.model.language import LanguageConfig
    from rode_lightning.model.lmm import FoodLMM
    from rode_lightning.model.vision import VisionConfig

    model = FoodLMM(VisionConfig(image_size=32, patch_size=16, width=32, layers=2, head_width=16),
                    LanguageConfig(hidden_size=32, intermediate_size=64, layers=2, heads=2, dtype="bf16"),
                    adapter, load_tokenizer("demo"), cluster_centroids=torch.randn(2, 8)
                    if adapter.method == "cluster" else None)
    model.train()
    base = model.language_model.model.layers[0].self_attn.q_proj
    assert model.language_model.model.embed_tokens.weight.dtype == torch.bfloat16
    adapter_parameters = {name: p for name, p in model.language_model.named_parameters() if p.requires_grad}
    assert adapter_parameters and all(p.dtype == torch.float32 for p in adapter_parameters.values())
    input_ids, mask, images = batch(model)
    clusters = torch.tensor([1, 0]) if adapter.method == "cluster" else None
    logits = model(input_ids, mask, images, clusters)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    logits.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in adapter_parameters.values())
    assert getattr(base, "base_layer", getattr(base, "base", None)).weight.dtype == torch.bfloat16
