"""Trainable parameters and an estimate of training memory for a config, before renting a GPU.

    python -m rode_lightning.estimate --config configs/rode.yaml [--config overlay.yaml] [--model.key value]
                                      [--batch-size 4] [--sequence-length 1024] [--shards 8]

The configuration is parsed by the command line's own parser (``rode_lightning.cli.parse_fit_arguments``), so
overlays, ``--key value`` overrides and their checks are those of ``fit``. The model is built on PyTorch's meta
device (shapes only, no memory, no weights read) with the real code: the language model from the shape its
checkpoint's ``config.json`` gives (or ``model.language``'s sizes, or the demo base's recipe), the vision tower, the
projector, and the adapters injected by ``inject.py`` (the method's own layers, matched by its own matcher), so the
parameter counts are exact. Memory is an estimate per GPU for one process without sharding:

* frozen weights: the LLaMA in ``model.language.dtype``, the vision tower in ``model.vision.dtype``, the
  projector in fp32;
* trainable parameters in fp32 with their fp32 gradients and AdamW's two fp32 moments: 16 bytes each;
* activations kept for backward under bf16 autocast, per decoder block and token: what the frozen block keeps
  (:func:`block_activation_bytes`) plus what its adapters keep (:func:`adapter_activation_bytes`, from each method's
  ``activation_bytes``: mostly copies of their input, a few rank-wide tensors). With activation checkpointing only
  each block's input is kept, plus one block being recomputed;
* logits: the vocabulary-sized output in bf16, its fp32 copy for the loss and its gradient.

Under FSDP (``trainer.strategy`` an ``AdapterFSDPStrategy`` or ``ModelParallelStrategy``, as configs/fsdp.yaml sets
it, or ``--shards N``) each GPU holds ``1 / N`` of the frozen weights plus the units it has gathered: the one it
runs and the next, prefetched, so twice the largest unit (the vision tower or a decoder block); the trainable state
is replicated, as ``scale/sharding.py`` shards it.

Allocator overhead, CUDA context (~0.5-1 GB) and the vision tower's transient activations are not included; treat
the total as a lower bound within about 20 %. The comparison table puts the config's adapter beside the RoDE
paper's alternatives on the same base model.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.inject import adapter_parameters, inject_adapters
from rode_lightning.cli import parse_fit_arguments
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.model.language import LanguageConfig, language_model_config
from rode_lightning.model.llava_weights import inspect_llava_directory
from rode_lightning.model.projector import MLPProjector
from rode_lightning.model.vision import VisionConfig, VisionEncoder
from rode_lightning.pretrain.build import DEMO_BASE
from rode_lightning.pretrain.language import llama_config
from rode_lightning.pretrain.recipe import BaseRecipe
from rode_lightning.user_errors import UserError, reported_in_one_line

LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 32000}
"""The text config of LLaVA-v1.5-7B's ``config.json`` (Vicuna-7B, LLaMA-7B's shape): assumed, with a note, only when
``model.language.path`` is not on this machine (the placeholder of configs/rode.yaml), so that a GPU can be sized
before the weights are downloaded."""

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
    """What the estimate reads off the model built on the meta device."""

    frozen_language: int
    frozen_vision: int
    adapter: int
    projector: int
    projector_trained: bool
    adapted_layers: list[list[tuple[str, int, int]]] = field(default_factory=list)
    """``(name, d_in, d_out)`` of each adapted projection, per decoder block."""

    @property
    def trainable(self) -> int:
        return self.adapter + (self.projector if self.projector_trained else 0)


def language_shape(language: LanguageConfig, tokenizer: str, warnings: list[str]) -> LlamaConfig:
    """The LLaMA the model would be built as: the demo base's recipe (``demo-base``, built or not), the text config
    of ``model.language.path`` (as ``model/language.py`` reads it), or, without a path, ``model.language``'s sizes
    with the tokenizer's vocabulary. A path not on this machine is assumed to be LLaVA-7B's, with a note."""
    if language.path == DEMO_BASE:
        demo_tokenizer = load_tokenizer("demo")
        return llama_config(BaseRecipe(), len(demo_tokenizer), demo_tokenizer)
    if language.path:
        if not Path(language.path, "config.json").is_file():
            warnings.append(f"{Path(language.path, 'config.json')} not found: assuming the LLaMA-7B shape")
            return LlamaConfig(**LLAMA_7B)
        return LlamaConfig(**inspect_llava_directory(language.path).text_config)
    return language_model_config(language, len(load_tokenizer(tokenizer)))


_BLOCK_INDEX = re.compile(r"\.layers\.(\d+)\.")


def count_parameters(vision: VisionConfig, llama: LlamaConfig, adapter: AdapterConfig,
                     train_projector: bool) -> ParameterCounts:
    """Builds the vision tower, the projector and the adapted LLaMA on the meta device and counts their parameters;
    the adapted layers are those ``inject.py`` adapted, read per decoder block (so a regex ``target_modules`` that
    adapts some blocks only is estimated block by block)."""
    method = adapter.adapter_method
    with torch.device("meta"):
        language_model = LlamaForCausalLM(llama)
        cluster_embedding = method.cluster_embedding(adapter, None)
        cluster_dim = None if cluster_embedding is None else cluster_embedding.shape[1]
        names = inject_adapters(language_model, adapter, RoutingContext(), cluster_dim)
        vision_encoder = VisionEncoder(vision)
        projector = MLPProjector(vision_encoder.output_dim, llama.hidden_size)
    adapters = adapter_parameters(language_model)  # what add_adapters trains
    adapter_count = sum(p.numel() for p in adapters.values())
    if cluster_embedding is not None:
        adapter_count += cluster_embedding.numel()  # MoCLE's shared cluster embedding
    frozen_language = sum(p.numel() for name, p in language_model.named_parameters() if name not in adapters)
    blocks: list[list[tuple[str, int, int]]] = [[] for _ in range(llama.num_hidden_layers)]
    for name in names:
        block = _BLOCK_INDEX.search(name)
        if block is not None:
            layer = language_model.get_submodule(name)
            blocks[int(block.group(1))].append((name, layer.in_features, layer.out_features))
    return ParameterCounts(frozen_language, sum(p.numel() for p in vision_encoder.parameters()), adapter_count,
                           sum(p.numel() for p in projector.parameters()), train_projector, blocks)


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
    raise UserError(f"trainer.strategy {class_path}: cannot tell how many processes share the weights from "
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
    adapters = [adapter_activation_bytes(adapter, block) for block in counts.adapted_layers]
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Every other argument is fit's: --config FILE (repeatable, later ones "
                                            "override), --model.adapter.method top1, ...")
    parser.add_argument("--batch-size", type=int, help="per-GPU batch size (default: data.batch_size)")
    parser.add_argument("--sequence-length", type=int, help="tokens per sample (default: data.max_length)")
    parser.add_argument("--shards", type=int, help="FSDP processes sharing the frozen weights (default: from "
                                                   "trainer.strategy; 1 unless it is FSDP)")
    args, fit_arguments = parser.parse_known_args(argv)
    if args.shards is not None and args.shards < 1:
        parser.error(f"--shards {args.shards}: the number of processes sharing the weights must be at least 1")
    if not fit_arguments:
        parser.error("give the run's configuration as for fit, e.g. --config configs/rode.yaml")
    config = parse_fit_arguments(fit_arguments).as_dict()
    shards = args.shards or fsdp_shards(config.get("trainer") or {})
    model, data = config["model"], config["data"]
    warnings: list[str] = []
    vision = VisionConfig(**{k: v for k, v in model["vision"].items() if k != "checkpoint"})
    language = LanguageConfig(**model["language"])
    llama = language_shape(language, model["tokenizer"], warnings)
    adapter = AdapterConfig(**model["adapter"])
    train_projector = model["train_projector"]
    weight_dtype = language.dtype
    checkpointing = bool(model["gradient_checkpointing"])
    batch_size = args.batch_size or data["batch_size"]
    sequence_length = args.sequence_length or data["max_length"]

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
    with reported_in_one_line():
        main()
