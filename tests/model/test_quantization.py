"""model.quantization on the CPU: a tiny LLaVA-1.5 base and a tiny Qwen2-VL with 8-bit (torchao, bitsandbytes) and
4-bit (bitsandbytes NF4) frozen weights train RoDE and plain LoRA, keep their adapters through a save and reload, stay
close to the unquantized model, and hold the bytes the estimate's formula says.

torchao's 4-bit weights need CUDA kernels (refused here with a message); they are untested on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.inject import adapter_layers
from rode_lightning.adapters.saving import load_adapter, save_adapter
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.model.language import LanguageConfig
from rode_lightning.model.lmm import FoodLMM
from rode_lightning.model.module import FoodLMMModule
from rode_lightning.model.quantization import (QuantizationConfig, check_runs_here, is_quantized,
                                               linear_storage_bytes, quantize_linear_layers, stored_bytes)
from rode_lightning.model.transformers_base import TransformersConfig
from rode_lightning.model.vision import VisionConfig
from rode_lightning.scale.checkpointing import frozen_fingerprint, frozen_weights_match
from rode_lightning.user_errors import UserError
from tests.tiny_vlm import save_tiny_qwen2vl, two_conversations as conversations

pytest.importorskip("torchao")
pytest.importorskip("bitsandbytes")

VISION = VisionConfig(image_size=32, patch_size=8, width=32, layers=2, head_width=16)
LANGUAGE = LanguageConfig(hidden_size=64, intermediate_size=128, layers=2, heads=2)
SCHEMES = {"torchao-8": QuantizationConfig(bits=8, library="torchao"),
           "bitsandbytes-8": QuantizationConfig(bits=8, library="bitsandbytes"),
           "bitsandbytes-4": QuantizationConfig(bits=4, library="bitsandbytes")}
# The largest logit difference from the unquantized model, relative to the logits' spread, each scheme stays
# under on these random tiny models (measured on the LLaVA base, seeds 0-2: torchao int8 1.1-1.4 %, LLM.int8
# 1.5-2.2 % (it computes in fp16), NF4 17-22 %: 4 bits on 64-wide random layers).
TOLERANCE = {"torchao-8": 0.03, "bitsandbytes-8": 0.04, "bitsandbytes-4": 0.3}


def llava(quantization: QuantizationConfig = QuantizationConfig(), seed: int = 0, **adapter) -> FoodLMM:
    torch.manual_seed(seed)
    return FoodLMM(VISION, LANGUAGE, AdapterConfig(**{"target_modules": ["q_proj", "v_proj"], **adapter}),
                   load_tokenizer("demo"), quantization=quantization)


def llava_batch(model: FoodLMM, length: int = 24):
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(10, 200, (2, length), generator=generator)
    input_ids[:, 3:3 + model.num_image_tokens] = model.image_token_id
    return input_ids, torch.ones_like(input_ids), torch.randn(2, 3, 32, 32, generator=generator)


def relative_difference(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return ((logits - reference).abs().max() / (reference.max() - reference.min())).item()


@pytest.mark.parametrize("name", SCHEMES)
def test_the_storage_formula_is_what_a_quantized_layer_holds(name):
    config = SCHEMES[name]
    for dtype in (torch.float32, torch.bfloat16):
        layers = nn.Sequential(nn.Linear(96, 40, bias=False), nn.Linear(40, 72)).to(dtype)
        assert quantize_linear_layers(layers, config) == 2
        assert all(is_quantized(layer) for layer in layers)
        expected = (linear_storage_bytes(config, 40, 96) + linear_storage_bytes(config, 72, 40)
                    + 72 * dtype.itemsize)  # the second layer's bias keeps its dtype
        assert stored_bytes(layers) == expected, (name, dtype)
        assert expected < 40 * 96 * dtype.itemsize + 72 * 40 * dtype.itemsize  # fewer bytes than unquantized


@pytest.mark.parametrize("name", SCHEMES)
def test_the_llava_base_quantized_stays_close_trains_rode_and_reloads_its_adapter(name, tmp_path):
    reference = llava(seed=0).eval()
    model = llava(SCHEMES[name], seed=0).eval()
    # The LLaMA's linear layers are quantized, the output layer, the vision tower and the projector are not; the
    # adapters wrap the quantized layers.
    quantized = {n for n, m in model.language_model.named_modules() if is_quantized(m)}
    assert "model.layers.0.self_attn.q_proj.base" in quantized and "model.layers.1.mlp.down_proj" in quantized
    assert not any(is_quantized(m) for m in [model.language_model.lm_head, *model.vision.modules(),
                                             *model.projector.modules()])
    assert len(adapter_layers(model.language_model)) == 4
    batch = llava_batch(model)
    with torch.no_grad():
        assert relative_difference(model(*batch), reference(*batch)) < TOLERANCE[name]

    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-2)
    labels = batch[0].clone()

    def loss() -> torch.Tensor:
        logits = model(*batch)
        return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())

    with torch.no_grad():
        before = loss().item()
    model.train()
    for _ in range(6):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after, trained = loss().item(), model(*batch)
    assert after < before - 0.1, (before, after)

    save_adapter(model, AdapterConfig(target_modules=["q_proj", "v_proj"]), tmp_path)
    fresh = llava(SCHEMES[name], seed=0).eval()
    load_adapter(fresh, AdapterConfig(target_modules=["q_proj", "v_proj"]), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(fresh(*batch), trained)
    # The frozen-weights fingerprint reads quantized tensors, and tells another seed's base apart.
    fingerprint = frozen_fingerprint(model)
    assert "language_model.model.layers.0.mlp.up_proj.weight" in fingerprint
    assert frozen_weights_match(fresh, fingerprint)
    assert not frozen_weights_match(llava(SCHEMES[name], seed=5), fingerprint)


def test_the_vision_tower_is_quantized_only_when_asked():
    model = llava(QuantizationConfig(bits=8, vision=True))
    tower = [n for n, m in model.vision.named_modules() if is_quantized(m)]
    assert tower, "nothing of the vision tower was quantized"
    # CLIP's attention reads its output projection's weight itself: it keeps its dtype.
    assert not any(n.endswith("attn.out_proj") for n in tower)
    batch = llava_batch(model)
    with torch.no_grad():
        assert torch.isfinite(model(*batch)).all()


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    return save_tiny_qwen2vl(tmp_path_factory.mktemp("qwen2vl"))


def qwen(directory: Path, quantization: QuantizationConfig = QuantizationConfig(), seed: int = 0,
         **adapter) -> FoodLMMModule:
    torch.manual_seed(seed)
    module = FoodLMMModule(base="transformers", transformers=TransformersConfig(path=str(directory), dtype="fp32"),
                           adapter=AdapterConfig(**{"target_modules": ["q_proj", "v_proj"], **adapter}),
                           quantization=quantization)
    module.configure_model()
    return module


@pytest.mark.parametrize("name", ["torchao-8", "bitsandbytes-4"])
@pytest.mark.parametrize("method", ["rode", "lora"])
def test_a_quantized_transformers_base_trains_and_reloads(qwen_dir, name, method, tmp_path):
    adapter = {"method": method} if method == "rode" else {"method": "lora", "ranks": [4]}
    reference = qwen(qwen_dir, **adapter)
    module = qwen(qwen_dir, SCHEMES[name], **adapter)
    hf = module.model.hf
    assert is_quantized(hf.get_decoder().layers[0].mlp.down_proj)
    kept = [hf.get_output_embeddings(), *module.model.connectors, *module.model.vision_tower.modules()]
    assert not any(is_quantized(m) for m in kept)
    batch = module.conversation_format(conversations())
    reference.model.eval(), module.model.eval()
    with torch.no_grad():
        assert relative_difference(module.forward_batch(batch), reference.forward_batch(batch)) < TOLERANCE[name]

    optimizer = torch.optim.AdamW(module.model.trainable_parameters().values(), lr=2e-2)
    with torch.no_grad():
        before = module.answer_loss(batch).item()
    module.model.train()
    for _ in range(4):
        optimizer.zero_grad()
        module.answer_loss(batch).backward()
        optimizer.step()
    module.model.eval()
    with torch.no_grad():
        after, trained = module.answer_loss(batch).item(), module.forward_batch(batch)
    assert after < before - 0.1, (before, after)
    save_adapter(module.model, module.adapter_config, tmp_path)
    fresh = qwen(qwen_dir, SCHEMES[name], seed=3, **adapter)
    fresh.model.eval()
    load_adapter(fresh.model, fresh.adapter_config, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(fresh.forward_batch(batch), trained)


def test_mistakes_and_what_cannot_run_here_are_named(monkeypatch):
    with pytest.raises(UserError, match=r"model.quantization.bits: 3; expected 8, 4 or null"):
        QuantizationConfig(bits=3)
    with pytest.raises(UserError, match=r"model.quantization.library: 'gptq'; expected one of torchao, bitsandbytes"):
        QuantizationConfig(bits=8, library="gptq")
    with pytest.raises(UserError, match=r"group_size: 100"):
        QuantizationConfig(bits=4, group_size=100)
    with pytest.raises(UserError, match=r"torchao's 4-bit weights need a CUDA GPU.*library: bitsandbytes"):
        check_runs_here(QuantizationConfig(bits=4, library="torchao"), cuda=False)
    check_runs_here(QuantizationConfig(bits=4, library="bitsandbytes"), cuda=False)
    with pytest.raises(UserError, match=r"compute in bf16, and model.language.dtype is float32; set "
                                        r"model.language.dtype: bf16"):
        check_runs_here(QuantizationConfig(bits=4), cuda=True, dtypes={"model.language.dtype": torch.float32})
    check_runs_here(QuantizationConfig(bits=4), cuda=True, dtypes={"model.language.dtype": torch.bfloat16})
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    with pytest.raises(UserError, match=r"torchao is not installed; pip install -e \"\.\[quantization\]\""):
        check_runs_here(QuantizationConfig(bits=8))


def test_fsdp_refuses_a_quantized_base():
    module = FoodLMMModule(vision=VISION, language=LANGUAGE, quantization=QuantizationConfig(bits=8))
    module._device_mesh = object()  # what ModelParallelStrategy gives the module
    with pytest.raises(UserError, match=r"model.quantization: FSDP2 cannot shard quantized weights"):
        module.configure_model()


@pytest.mark.parametrize("name", SCHEMES)
def test_the_estimate_counts_the_bytes_the_built_llava_base_holds(name):
    from rode_lightning.estimate import count_parameters, frozen_bytes
    from rode_lightning.model.language import language_model_config

    config = QuantizationConfig(bits=SCHEMES[name].bits, library=SCHEMES[name].library, vision=True)
    model = llava(config)
    adapters = {id(p) for p in model.trainable_parameters().values()}
    counts = count_parameters(VISION, language_model_config(LANGUAGE, len(load_tokenizer("demo"))),
                              AdapterConfig(target_modules=["q_proj", "v_proj"]), train_projector=True)
    built_language = stored_bytes(model.language_model) - sum(
        p.numel() * p.element_size() for p in model.language_model.parameters() if id(p) in adapters)
    assert frozen_bytes(counts.frozen_language, counts.quantizable_language, "fp32", config) == built_language
    assert frozen_bytes(counts.frozen_vision, counts.quantizable_vision, "fp32", config) == stored_bytes(model.vision)
    assert built_language < counts.frozen_language * 4  # and it is fewer bytes than fp32


@pytest.mark.parametrize("name", ["torchao-8", "bitsandbytes-4"])
def test_the_estimate_counts_the_bytes_the_built_transformers_base_holds(qwen_dir, name):
    from transformers import AutoConfig

    from rode_lightning.estimate import count_transformers_parameters, frozen_bytes

    module = qwen(qwen_dir, SCHEMES[name])
    hf = module.model.hf
    counts = count_transformers_parameters(AutoConfig.from_pretrained(qwen_dir), module.adapter_config,
                                           train_projector=True)
    outside = {id(p) for part in [module.model.vision_tower, *module.model.connectors] for p in part.parameters()}
    outside |= {id(p) for p in module.model.trainable_parameters().values()}
    language = nn.ParameterList([p for p in dict.fromkeys(hf.parameters()) if id(p) not in outside])
    assert frozen_bytes(counts.frozen_language, counts.quantizable_language, "fp32", SCHEMES[name]) == \
        stored_bytes(language)


def test_ddp_wraps_a_quantized_base_leaving_its_quantized_weights_out_of_the_broadcast(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    module = FoodLMMModule(vision=VISION, language=LANGUAGE, quantization=QuantizationConfig(bits=8))
    module.configure_model()
    ignored = module._ddp_params_and_buffers_to_ignore
    assert "model.language_model.model.layers.0.mlp.up_proj.weight" in ignored
    assert not any(".experts." in name or ".router." in name for name in ignored)  # adapters are reduced
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(module)  # broadcasts rank 0's tensors, but not the quantized ones
        trainable = {id(p) for p in module.model.trainable_parameters().values()}
        assert {id(p) for p in wrapped._module_parameters} >= trainable
        del module._ddp_params_and_buffers_to_ignore
        with pytest.raises(NotImplementedError, match="Int8Tensor"):
            DistributedDataParallel(module)
    finally:
        dist.destroy_process_group()
