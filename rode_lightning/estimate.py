"""Trainable parameters and an estimate of training memory for a config, before renting a GPU.

    python -m rode_lightning.estimate --config configs/rode.yaml [--config overlay.yaml] [--batch-size 4]

The model is built on PyTorch's meta device (shapes only, no memory, no weights read), with the real adapter
injection code, so parameter counts are exact. Memory is an estimate per GPU for one process without sharding:

* frozen weights: the LLaMA in ``model.language.dtype``, the vision tower in ``model.vision.dtype``, the
  projector in fp32;
* trainable parameters in fp32 with their fp32 gradients and AdamW's two fp32 moments: 16 bytes each;
* activations kept for backward under bf16 autocast, per decoder block and token: what the frozen block keeps
  (:func:`block_activation_bytes`) plus what its adapters keep (:func:`adapter_activation_bytes`: mostly copies of
  their input, a few rank-wide tensors). With activation checkpointing only each block's input is kept, plus one
  block being recomputed;
* logits: the vocabulary-sized output in bf16, its fp32 copy for the loss and its gradient.

Under FSDP (``trainer.strategy`` an ``AdapterFSDPStrategy`` or ``ModelParallelStrategy``, as configs/fsdp.yaml sets
it, or ``--shards N``) each GPU holds ``1 / N`` of the frozen weights plus the units it has gathered: the one it
runs and the next, prefetched, so twice the largest unit (the vision tower or a decoder block); the trainable state
is replicated, as ``model/sharding.py`` shards it.

Allocator overhead, CUDA context (~0.5-1 GB) and the vision tower's transient activations are not included; treat
the total as a lower bound within about 20 %. The comparison table puts the config's adapter beside the RoDE
paper's alternatives on the same base model.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.inject import find_target_modules, inject_adapters, is_adapter_parameter
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.model.vision import VisionConfig, VisionEncoder
from rode_lightning.pretrain.build import DEMO_BASE
from rode_lightning.pretrain.recipe import BaseRecipe

LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 32000}
"""LLaMA-7B (and Vicuna-7B, the language model of LLaVA-7B)."""

COMPARED: dict[str, AdapterConfig] = {
    "lora r32": AdapterConfig(method="lora", ranks=[32]),
    "softmax [8,8,8,8]": AdapterConfig(method="softmax", ranks=[8, 8, 8, 8]),
    "top1 [8,8,8,8]": AdapterConfig(method="top1", ranks=[8, 8, 8, 8]),
    "rode [8,8,8,8]": AdapterConfig(method="rode", ranks=[8, 8, 8, 8]),
    "rode [2,4,8,16]": AdapterConfig(method="rode", ranks=[2, 4, 8, 16]),
}

BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
GIB = 1024 ** 3


@dataclass
class ParameterCounts:
    frozen_language: int
    frozen_vision: int
    adapter: int
    projector: int
    projector_trained: bool

    @property
    def trainable(self) -> int:
        return self.adapter + (self.projector if self.projector_trained else 0)


def language_shape(language: dict, warnings: list[str]) -> LlamaConfig:
    """The LLaMA shape: from ``config.json`` of ``model.language.path`` when readable, else from the config's sizes
    (no path), else LLaMA-7B (a path that is not on this machine, e.g. the placeholder of configs/rode.yaml)."""
    path = language.get("path")
    if path == DEMO_BASE:  # the demo base (rode_lightning/pretrain), built or not: its recipe has the shape
        recipe = BaseRecipe()
        return LlamaConfig(hidden_size=recipe.hidden_size, intermediate_size=recipe.intermediate_size,
                           num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
                           num_key_value_heads=recipe.heads, vocab_size=len(load_tokenizer("demo")))
    if path:
        config_file = Path(path) / "config.json"
        if config_file.is_file():
            raw = json.loads(config_file.read_text())
            raw = raw.get("text_config", raw)  # llava-hf nests the LLaMA config
            keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
            values = {key: raw[key] for key in keys if key in raw}
            values["num_key_value_heads"] = raw.get("num_key_value_heads", values.get("num_attention_heads"))
            return LlamaConfig(**{**LLAMA_7B, **values})
        warnings.append(f"{config_file} not found: assuming the LLaMA-7B shape")
        return LlamaConfig(**LLAMA_7B)
    return LlamaConfig(hidden_size=language.get("hidden_size", 128),
                       intermediate_size=language.get("intermediate_size", 256),
                       num_hidden_layers=language.get("layers", 2), num_attention_heads=language.get("heads", 4),
                       num_key_value_heads=language.get("heads", 4), vocab_size=language.get("vocab_size", 32000))


def count_parameters(vision: VisionConfig, llama: LlamaConfig, adapter: AdapterConfig,
                     train_projector: bool) -> ParameterCounts:
    """Builds vision tower and adapted LLaMA on the meta device and counts their parameters."""
    with torch.device("meta"):
        language_model = LlamaForCausalLM(llama)
        cluster_embedding = adapter.adapter_method.cluster_embedding(adapter, None)
        cluster_dim = None if cluster_embedding is None else cluster_embedding.shape[1]
        inject_adapters(language_model, adapter, RoutingContext(), cluster_dim)
        vision_encoder = VisionEncoder(vision)
    adapter_count = sum(p.numel() for name, p in language_model.named_parameters() if is_adapter_parameter(name))
    if cluster_embedding is not None:
        adapter_count += cluster_embedding.numel()  # MoCLE's shared cluster embedding
    frozen_language = sum(p.numel() for name, p in language_model.named_parameters()
                          if not is_adapter_parameter(name))
    width, hidden = vision.width, llama.hidden_size
    projector = width * hidden + hidden + hidden * hidden + hidden  # Linear(width, h), GELU, Linear(h, h)
    return ParameterCounts(frozen_language, sum(p.numel() for p in vision_encoder.parameters()), adapter_count,
                           projector, train_projector)


def adapted_layers_by_block(llama: LlamaConfig, adapter: AdapterConfig) -> list[list[tuple[str, int, int]]]:
    """``(name, d_in, d_out)`` of each adapted projection, per decoder block, as ``inject.py``'s own matcher picks
    them on the whole LLaMA (built on the meta device): suffixes and full-name regexes alike, so a regex that adapts
    some blocks only is estimated block by block."""
    with torch.device("meta"):
        model = LlamaForCausalLM(llama)
    blocks: list[list[tuple[str, int, int]]] = [[] for _ in range(llama.num_hidden_layers)]
    for name in find_target_modules(model, adapter.target_modules):
        parts = name.split(".")
        if "layers" in parts and parts.index("layers") + 1 < len(parts) and parts[parts.index("layers") + 1].isdigit():
            layer = model.get_submodule(name)
            blocks[int(parts[parts.index("layers") + 1])].append((name, layer.in_features, layer.out_features))
    return blocks


def block_activation_bytes(llama: LlamaConfig) -> float:
    """Bytes per token that one frozen LLaMA decoder block keeps for backward under bf16 autocast.

    A frozen ``nn.Linear`` keeps nothing for its own weight, so what remains is: each RMSNorm's input, upcast to
    fp32 (2 x 4 h), and its inverse RMS (2 x 4); attention's q, k, v and output in bf16 (4 x 2 h; LLaMA-7B has as
    many key-value heads as query heads), its log-sum-exp per head in fp32 (4 heads) and the rotary cos and sin
    (2 x 2 head_dim); the SiLU-gated MLP's gate and up outputs and the SiLU output (3 x 2 I). Compared with autograd's
    saved tensors of a transformers LLaMA block in tests/test_estimate.py.
    """
    h, heads = llama.hidden_size, llama.num_attention_heads
    return 2 * 4 * h + 2 * 4 + 4 * 2 * h + 4 * heads + 2 * 2 * (h // heads) + 3 * 2 * llama.intermediate_size


# Adapted layers that read the same tensor, in a LLaMA block: their input is kept once.
_SHARED_INPUTS = {"q_proj": "attention input", "k_proj": "attention input", "v_proj": "attention input",
                  "gate_proj": "MLP input", "up_proj": "MLP input"}


def adapter_activation_bytes(adapter: AdapterConfig, layers: list[tuple[str, int, int]]) -> float:
    """Bytes per token that the adapters of one block keep for backward, in bf16 mixed precision on a GPU.

    ``layers``: ``(name, d_in, d_out)`` of each adapted layer. Each layer's terms are its method's
    (``AdapterMethod.activation_bytes``): what it keeps of its own, and whether it keeps its input, ``2 D``, which
    is counted once per group of layers reading the same tensor (q, k, v; gate, up).
    """
    method = adapter.adapter_method
    total = 0.0
    kept_inputs: dict[str, int] = {}  # width of each shared input kept, by group
    for name, d_in, _ in layers:
        keeps_input, own = method.activation_bytes(adapter, d_in)
        if keeps_input:
            kept_inputs[_SHARED_INPUTS.get(name.rsplit(".", 1)[-1], name)] = d_in
        total += own
    return total + 2 * sum(kept_inputs.values())


def fsdp_shards(trainer: dict) -> int:
    """How many ways ``trainer.strategy`` shards the frozen weights: its ``data_parallel_size`` (or devices x nodes)
    for FSDP2, 1 for any other strategy."""
    strategy = trainer.get("strategy")
    class_path = strategy.get("class_path", "") if isinstance(strategy, dict) else str(strategy or "")
    if not class_path.endswith(("AdapterFSDPStrategy", "ModelParallelStrategy")):
        return 1
    size = (strategy.get("init_args") or {}).get("data_parallel_size") if isinstance(strategy, dict) else None
    if isinstance(size, int) and size > 0:
        return size
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes", 1)
    if isinstance(devices, int) and devices > 0 and isinstance(nodes, int):
        return devices * nodes
    raise ValueError(f"trainer.strategy {class_path}: cannot tell how many processes share the weights from "
                     f"data_parallel_size {size!r} and devices {devices!r}; pass --shards N")


def memory_estimate(counts: ParameterCounts, llama: LlamaConfig, adapter: AdapterConfig, batch_size: int,
                    sequence_length: int, weight_dtype: str, checkpointing: bool,
                    vision_dtype: str = "fp32", shards: int = 1) -> dict[str, float]:
    """Bytes per component (see the module docstring for the model behind each term)."""
    tokens = batch_size * sequence_length
    h, layers, vocab = llama.hidden_size, llama.num_hidden_layers, llama.vocab_size
    frozen = counts.frozen_language * BYTES[weight_dtype] + counts.frozen_vision * BYTES[vision_dtype]
    if shards > 1:
        block = (counts.frozen_language - 2 * vocab * h - h) // layers  # embedding, LM head and final norm aside
        largest_unit = max(block * BYTES[weight_dtype], vocab * h * BYTES[weight_dtype],
                           counts.frozen_vision * BYTES[vision_dtype])
        frozen = frozen / shards + 2 * largest_unit
    adapters = [adapter_activation_bytes(adapter, block) for block in adapted_layers_by_block(llama, adapter)]
    frozen_block = tokens * block_activation_bytes(llama)
    if checkpointing:  # every block's input, and the largest block being recomputed
        activations = tokens * h * 2 * layers + frozen_block + tokens * max(adapters, default=0.0)
    else:
        activations = frozen_block * layers + tokens * sum(adapters)
    return {
        # The LLaMA in model.language.dtype, the tower in model.vision.dtype; the projector is kept in fp32.
        "frozen_weights": frozen + (0 if counts.projector_trained else counts.projector) * 4,
        "trainable_states": counts.trainable * 16,  # fp32 weights, gradients, AdamW moments
        "activations": activations,
        "logits": tokens * vocab * (2 + 4 + 4),
    }


def merged_config(paths: list[str]) -> dict:
    merged: dict = {}
    for path in paths:
        _merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    return merged


def _merge(target: dict, source: dict) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True, help="config file(s), later ones override")
    parser.add_argument("--batch-size", type=int, help="per-GPU batch size (default: data.batch_size)")
    parser.add_argument("--sequence-length", type=int, help="tokens per sample (default: data.max_length)")
    parser.add_argument("--shards", type=int, help="FSDP processes sharing the frozen weights (default: from "
                                                   "trainer.strategy; 1 unless it is FSDP)")
    args = parser.parse_args(argv)
    if args.shards is not None and args.shards < 1:
        parser.error(f"--shards {args.shards}: the number of processes sharing the weights must be at least 1")
    config = merged_config(args.config)
    shards = args.shards or fsdp_shards(config.get("trainer") or {})
    model, data = config.get("model", {}), config.get("data", {})
    warnings: list[str] = []
    vision = VisionConfig(**{k: v for k, v in (model.get("vision") or {}).items() if k != "checkpoint"})
    llama = language_shape(model.get("language") or {}, warnings)
    adapter = AdapterConfig(**(model.get("adapter") or {}))
    train_projector = model.get("train_projector", True)
    weight_dtype = (model.get("language") or {}).get("dtype", "fp32")
    checkpointing = bool(model.get("gradient_checkpointing", False))
    batch_size = args.batch_size or data.get("batch_size", 8)
    sequence_length = args.sequence_length or data.get("max_length", 512)

    rows = {"this config": adapter, **COMPARED}
    report = {}
    for name, variant in rows.items():
        variant = replace(variant, target_modules=adapter.target_modules)
        counts = count_parameters(vision, llama, variant, train_projector)
        memory = memory_estimate(counts, llama, variant, batch_size, sequence_length, weight_dtype, checkpointing,
                                 vision.dtype, shards)
        report[name] = {"method": variant.method, "ranks": variant.ranks, "trainable_parameters": counts.trainable,
                        "adapter_parameters": counts.adapter, "memory_gib": {k: v / GIB for k, v in memory.items()},
                        "total_gib": sum(memory.values()) / GIB}

    for warning in warnings:
        print(f"note: {warning}")
    print(f"LLaMA {llama.num_hidden_layers} blocks x {llama.hidden_size} wide, vocabulary {llama.vocab_size}; "
          f"vision {vision.preset or 'custom'} ({vision.num_patches} patch tokens); adapters on "
          f"{', '.join(adapter.target_modules)}; batch {batch_size} x {sequence_length} tokens; frozen LLaMA in "
          f"{weight_dtype}, vision tower in {vision.dtype}; activation checkpointing {'on' if checkpointing else 'off'}; projector "
          f"{'trained' if train_projector else 'frozen'}; "
          + (f"FSDP: frozen weights sharded over {shards} processes" if shards > 1 else "no weight sharding"))
    components = list(next(iter(report.values()))["memory_gib"])
    print("GiB per GPU: frozen_weights; trainable_states = fp32 trainable weights + gradients + AdamW moments; "
          "activations kept for backward; logits with the loss's fp32 copy and gradient")
    labels = {name: f"{name}: {row['method']} {row['ranks']}" if name == "this config" else name
              for name, row in report.items()}
    width = max(len("adapter"), *map(len, labels.values()))
    print(f"{'adapter':{width}s} {'trainable':>12s} " + " ".join(f"{c:>16s}" for c in components) + f" {'total':>8s}")
    for name, row in report.items():
        print(f"{labels[name]:{width}s} {row['trainable_parameters']:12,d} "
              + " ".join(f"{row['memory_gib'][c]:16.3f}" for c in components) + f" {row['total_gib']:8.2f}")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
