from __future__ import annotations

import pytest
import torch

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.inject import adapter_layers
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.model.language import LanguageConfig
from rode_lightning.model.lmm import FoodLMM
from rode_lightning.model.vision import VisionConfig

VISION = VisionConfig(image_size=32, patch_size=8, width=32, layers=2, head_width=16)
LANGUAGE = LanguageConfig(hidden_size=32, intermediate_size=64, layers=2, heads=2)


def build(adapter=None, train_projector=True):
    return FoodLMM(VISION, LANGUAGE, adapter or AdapterConfig(), load_tokenizer("demo"), train_projector)


def batch(model, length=24, batch_size=2):
    input_ids = torch.randint(10, 200, (batch_size, length))
    input_ids[:, 3:3 + model.num_image_tokens] = model.image_token_id
    return input_ids, torch.ones_like(input_ids), torch.randn(batch_size, 3, 32, 32)


def test_only_adapters_and_projector_are_trainable():
    model = build()
    trainable = set(model.trainable_parameters())
    assert trainable, "nothing to train"
    for name in trainable:
        assert name.startswith("projector.") or ".experts." in name or ".router." in name, name
    assert not any(p.requires_grad for p in model.vision.parameters())
    base = [n for n, p in model.language_model.named_parameters() if ".base." in n or "embed" in n]
    assert base and not any(dict(model.language_model.named_parameters())[n].requires_grad for n in base)
    # Adapters in every q_proj and k_proj, nowhere else.
    names = set(adapter_layers(model.language_model))
    assert names == {f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "k_proj")}


def test_projector_can_be_frozen():
    model = build(train_projector=False)
    assert not any(name.startswith("projector.") for name in model.trainable_parameters())


def test_adapted_model_starts_equal_to_the_base_model():
    model = build()
    input_ids, mask, images = batch(model)
    adapted = model(input_ids, mask, images)
    # Strip the adapters: put every wrapped base layer back in its place.
    for name, layer in adapter_layers(model.language_model).items():
        parent, _, child = name.rpartition(".")
        setattr(model.language_model.get_submodule(parent), child, layer.base)
    assert not adapter_layers(model.language_model)
    torch.testing.assert_close(adapted, model(input_ids, mask, images), rtol=0, atol=0)


def test_image_features_change_the_output():
    model = build()
    input_ids, mask, images = batch(model)
    out_a = model(input_ids, mask, images)
    out_b = model(input_ids, mask, images.flip(-1))
    assert not torch.allclose(out_a, out_b)


def test_wrong_number_of_image_tokens_is_refused():
    model = build()
    input_ids, mask, images = batch(model)
    input_ids[0, 3] = 11
    try:
        model(input_ids, mask, images)
    except ValueError as error:
        assert "exactly 16 <image> tokens" in str(error)
    else:
        raise AssertionError("expected a ValueError")


def test_generation_with_left_padding_matches_unpadded():
    model = build()
    input_ids, mask, images = batch(model, batch_size=1)
    alone = model.generate(input_ids, mask, images, max_new_tokens=5)
    padded_ids = torch.cat([torch.full((1, 4), model.pad_token_id), input_ids], dim=1)
    padded_mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), mask], dim=1)
    padded = model.generate(padded_ids, padded_mask, images, max_new_tokens=5)
    assert torch.equal(alone, padded)


def test_vision_tower_in_bf16_gives_the_fp32_features_to_bf16_precision():
    from rode_lightning.model.vision import VisionEncoder

    torch.manual_seed(0)
    full = VisionEncoder(VISION)
    half = VisionEncoder(VisionConfig(**{**VISION.__dict__, "dtype": "bf16"}))
    half.load_state_dict(full.state_dict())  # copied into bf16 tensors
    assert {parameter.dtype for parameter in half.parameters()} == {torch.bfloat16}
    images = torch.randn(2, 3, 32, 32)
    expected, got = full(images), half(images)
    assert got.dtype == torch.bfloat16 and got.shape == expected.shape
    torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.05)

    # In the whole model: the bf16 tokens reach the fp32 projector in its dtype.
    torch.manual_seed(0)
    model = FoodLMM(VisionConfig(**{**VISION.__dict__, "dtype": "bf16"}), LANGUAGE, AdapterConfig(),
                    load_tokenizer("demo"), True)
    logits = model(*batch(model))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_unknown_vision_dtype_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"model.vision.dtype: 'fp8'; expected one of \['bf16', 'fp16', 'fp32'\]"):
        VisionConfig(dtype="fp8")


def test_model_compile_compiles_every_decoder_block_once_and_keeps_the_loss():
    """``model.compile: <backend>`` compiles each decoder block in configure_model (``eager`` here: the tracing
    without inductor's C++ build); the compiled model computes the eager model's logits, and a second
    configure_model (validate after fit) compiles nothing again."""
    from rode_lightning.model.module import FoodLMMModule

    eager = FoodLMMModule(VISION, LANGUAGE, AdapterConfig(method="top1", ranks=[4, 4]))
    compiled = FoodLMMModule(VISION, LANGUAGE, AdapterConfig(method="top1", ranks=[4, 4]), compile="eager")
    for module in (eager, compiled):
        torch.manual_seed(0)  # the same weights in both
        module.configure_model()
    blocks = list(compiled.model.language_model.model.layers)
    first_calls = [block._compiled_call_impl for block in blocks]
    assert all(call is not None for call in first_calls)
    assert all(block._compiled_call_impl is None for block in eager.model.language_model.model.layers)
    compiled.configure_model()
    assert [block._compiled_call_impl for block in blocks] == first_calls
    eager.eval(), compiled.eval()
    inputs = batch(eager.model)
    with torch.no_grad():
        torch.testing.assert_close(compiled.model(*inputs), eager.model(*inputs))
