"""Trainable parameters and an estimate of training memory for a config, before renting a GPU.

    python -m rode_lightning.estimate --config configs/rode.yaml [--config overlay.yaml] [--model.key value]
                                      [--batch-size 4] [--sequence-length 1024] [--shards 8]

The configuration is parsed by the command line's own parser (``rode_lightning.cli.parse_fit_arguments``), so
overlays, ``--key value`` overrides and their checks are those of ``fit``. The model is built on PyTorch's meta
device (shapes only, no memory, no weights read) with the real code: the language model from the shape its
checkpoint's ``config.json`` gives (or ``model.language``'s sizes, or the demo base's recipe), the vision tower, the
projector, and the adapters injected by ``inject.py`` (the method's own layers, matched by its own matcher), so the
parameter counts are exact. With ``model.base: transformers`` the whole model is built from the directory's
``config.json`` alone (``AutoModelForImageTextToText.from_config``; no weights read, so a directory holding only the
config, as ``configs/bases/`` does, is enough) and the adapters go where ``TransformersLMM`` puts them: the language
model (``get_decoder()``), or with ``adapter.scope: model`` the whole model. Memory is an estimate per GPU for one
process without sharding:

* frozen weights: the LLaMA in ``model.language.dtype``, the vision tower in ``model.vision.dtype``, the
  projector in fp32; a transformers base wholly in ``model.transformers.dtype``;
* trainable parameters in fp32 with their fp32 gradients and AdamW's two fp32 moments: 16 bytes each (a transformers
  base's connector too when ``train_projector`` trains it: ``TransformersLMM`` keeps it in fp32);
* activations kept for backward under bf16 autocast, per decoder block and token: what the frozen block keeps
  (:func:`block_activation_bytes`) plus what its adapters keep (:func:`adapter_activation_bytes`, from each method's
  ``activation_bytes``: mostly copies of their input, a few rank-wide tensors). With activation checkpointing only
  each block's input is kept, plus one block being recomputed. A transformers base's text config gives the shape
  (grouped key-value heads, ``head_dim``, Qwen3's q/k norms); adapters that ``scope: model`` puts outside the
  decoder blocks count in parameters, not in activations;
* logits: the vocabulary-sized output in bf16, its fp32 copy for the loss and its gradient.

Under FSDP (``trainer.strategy`` an ``AdapterFSDPStrategy`` or ``ModelParallelStrategy``, as configs/fsdp.yaml sets
it, or ``--shards N``) each GPU holds ``1 / N`` of the frozen weights plus the units it has gathered: the one it
runs and the next, prefetched, so twice the largest unit (the vision tower or a decoder block; for a transformers base
the units of ``TransformersLMM.frozen_units``: each vision block, the rest of the tower, each decoder block, the
embedding and the LM head unless tied, a frozen connector outside the tower, and the root's remainder); the trainable
state is replicated, as ``scale/sharding.py`` shards it.

Why this module is over 400 lines: it is one command, and its parts (counting both bases on the meta device, the
activation model, the FSDP units, the comparison table) share ``ParameterCounts`` and the memory model; split, each
part would import the others.

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
from torch import nn
from transformers import (AutoConfig, AutoModelForImageTextToText, LlamaConfig, LlamaForCausalLM,
                          PretrainedConfig)

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.inject import adapter_parameters, inject_adapters
from rode_lightning.cli import parse_fit_arguments
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.model.language import LanguageConfig, language_model_config
from rode_lightning.model.llava_weights import inspect_llava_directory
from rode_lightning.model.projector import MLPProjector
from rode_lightning.model.quantization import QuantizationConfig, linear_storage_bytes, quantizable_linear_names
from rode_lightning.model.transformers_base import (TransformersConfig, connectors_of, decoder_blocks_of,
                                                     frozen_units_of, unquantized_modules, vision_tower_of)
from rode_lightning.model.vision import VisionConfig, VisionEncoder
from rode_lightning.pretrain.build import DEMO_BASE
from rode_lightning.pretrain.language import llama_config
from rode_lightning.pretrain.recipe import BaseRecipe
from rode_lightning.user_errors import MissingFileError, UserError, reported_in_one_line

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
    largest_unit: int | None = None
    """Frozen parameters of the largest unit FSDP gathers whole (transformers base, read off its units); ``None``:
    LLaVA's, from the closed form in :func:`memory_estimate`."""
    qk_norm: bool = False
    """Whether the decoder blocks normalise queries and keys per head (Qwen3's ``q_norm`` / ``k_norm``)."""
    quantizable_language: list[tuple[int, int]] = field(default_factory=list)
    """``(out, in)`` of each frozen language-model weight ``model.quantization`` would quantize."""
    quantizable_vision: list[tuple[int, int]] = field(default_factory=list)
    """The same for the vision tower (quantized with ``model.quantization.vision``)."""

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
        quantizable_language = _weight_shapes(language_model, quantizable_linear_names(
            language_model, keep=lambda name: name == "lm_head"))  # as FoodLMM quantizes it
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
                           sum(p.numel() for p in projector.parameters()), train_projector, blocks,
                           quantizable_language=quantizable_language,
                           quantizable_vision=_weight_shapes(vision_encoder, quantizable_linear_names(vision_encoder)))


def _weight_shapes(model: nn.Module, names: list[str]) -> list[tuple[int, int]]:
    return [tuple(model.get_submodule(name).weight.shape) for name in names]


def _quantizable_in_transformers_model(model: nn.Module) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The shapes of the linear weights ``model.quantization`` quantizes in a transformers base: in the language
    model (all but the modules :func:`unquantized_modules` keeps), and in the vision tower (with ``vision``)."""
    def inside(names: list[str]) -> set[int]:
        return {id(child) for name in names for child in model.get_submodule(name).modules()}

    kept_always = inside(unquantized_modules(model, vision=True))
    kept_without_vision = inside(unquantized_modules(model, vision=False))
    linear = [module for module in model.modules() if isinstance(module, nn.Linear)]
    language = [tuple(m.weight.shape) for m in linear if id(m) not in kept_without_vision]
    vision = [tuple(m.weight.shape) for m in linear if id(m) in kept_without_vision and id(m) not in kept_always]
    return language, vision


def transformers_shape(config: TransformersConfig) -> PretrainedConfig:
    """The config of ``model.transformers.path``'s ``config.json``, all the estimate reads of that directory.

    Unlike ``model.language.path`` no shape is assumed when it is missing: a transformers base can be any family.
    """
    shipped = "configs/bases/ holds Qwen2.5-VL-7B-Instruct's and Qwen3-VL-8B-Instruct's"
    if config.path is None:
        raise UserError(f"model.transformers.path: not set; the estimate builds the model from that directory's "
                        f"config.json ({shipped})")
    directory = Path(config.path).expanduser()
    if not (directory / "config.json").is_file():
        raise MissingFileError(f"model.transformers.path: {directory} has no config.json; the estimate builds the "
                               f"model from it and assumes no shape ({shipped})")
    try:
        return AutoConfig.from_pretrained(directory)
    except (ValueError, OSError, KeyError) as error:  # transformers on a file it cannot read: the user's file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"model.transformers.path: transformers cannot read {directory / 'config.json'} "
                        f"({reason})") from None


def _frozen_unit_sizes(model: nn.Module, units: list[nn.Module], trainable: set[int]) -> list[int]:
    """Frozen parameters of each FSDP unit, ``units`` in ``TransformersLMM.frozen_units``'s order (children before
    the modules holding them), then the root's remainder: as ``fully_shard`` assigns them, a parameter belongs to the
    first unit that holds it, and trainable ones (``trainable``: their ids) to units of their own."""
    sizes = [0] * (len(units) + 1)
    owned: set[int] = set()
    for index, unit in enumerate(units):
        for parameter in unit.parameters():
            if id(parameter) not in trainable and id(parameter) not in owned:
                owned.add(id(parameter))
                sizes[index] += parameter.numel()
    sizes[-1] = sum(parameter.numel() for parameter in model.parameters()
                    if id(parameter) not in trainable and id(parameter) not in owned)
    return sizes


def count_transformers_parameters(config: PretrainedConfig, adapter: AdapterConfig,
                                  train_projector: bool) -> ParameterCounts:
    """Builds ``config``'s model on the meta device, puts ``adapter`` into it where ``TransformersLMM`` does and
    counts: frozen language (decoder, embeddings, LM head and whatever else lies outside the vision tower and the
    connector; a tied embedding counted once), frozen vision (the tower without the connector), the connector
    (``CONNECTOR_NAMES``), the adapters; the adapted layers per decoder block; and the FSDP units' sizes."""
    method = adapter.adapter_method
    if adapter.scope == "model" and method.needs_cluster_features:  # TransformersLMM refuses it
        raise UserError("model.adapter.scope: model with method 'cluster': the vision tower sees image patches, "
                        "not samples, so it cannot be routed by each sample's cluster; use scope: language_model")
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
        quantizable_language, quantizable_vision = _quantizable_in_transformers_model(model)
        cluster_embedding = method.cluster_embedding(adapter, None)
        cluster_dim = None if cluster_embedding is None else cluster_embedding.shape[1]
        decoder = model.get_decoder()
        root = decoder if adapter.scope == "language_model" else model
        names = inject_adapters(root, adapter, RoutingContext(), cluster_dim)
    tower = vision_tower_of(model)
    connectors = connectors_of(model)
    parameters = {id(parameter): parameter for parameter in model.parameters()}  # a tied tensor once
    adapters = {id(parameter) for parameter in adapter_parameters(root).values()}
    connector = {id(parameter) for module in connectors for parameter in module.parameters()} - adapters
    vision = {id(parameter) for parameter in tower.parameters()} - connector - adapters if tower is not None else set()
    language = set(parameters) - vision - connector - adapters

    def size(ids: set[int]) -> int:
        return sum(parameters[i].numel() for i in ids)

    decoder_blocks = decoder_blocks_of(model)
    block_of = {id(module): index for index, block in enumerate(decoder_blocks) for module in block.modules()}
    blocks: list[list[tuple[str, int, int]]] = [[] for _ in decoder_blocks]
    for name in names:
        layer = root.get_submodule(name)
        if id(layer) in block_of:  # scope: model also adapts layers outside the decoder blocks
            blocks[block_of[id(layer)]].append((name, layer.in_features, layer.out_features))

    trainable = adapters | (connector if train_projector else set())
    units = frozen_units_of(model, [] if train_projector else connectors)
    largest_unit = max(_frozen_unit_sizes(model, units, trainable))

    adapter_count = size(adapters) + (cluster_embedding.numel() if cluster_embedding is not None else 0)
    qk_norm = bool(decoder_blocks) and any(name.rsplit(".", 1)[-1] == "q_norm"
                                           for name, _ in decoder_blocks[0].named_modules())
    return ParameterCounts(size(language), size(vision), adapter_count, size(connector),
                           train_projector and bool(connectors), blocks, largest_unit, qk_norm,
                           quantizable_language, quantizable_vision)


def block_activation_bytes(llama: PretrainedConfig, qk_norm: bool = False) -> float:
    """Bytes per token that one frozen LLaMA-style decoder block keeps for backward under bf16 autocast.

    ``llama``: a LLaMA config or a transformers base's text config (``config.get_text_config()``). A frozen
    ``nn.Linear`` keeps nothing for its own weight, so what remains is: each RMSNorm's input, upcast to fp32
    (2 x 4 h), and its inverse RMS (2 x 4); attention's q and output (2 x 2 heads x head_dim) and k and v
    (2 x 2 kv_heads x head_dim: grouped heads are kept unrepeated, as sdpa takes them) in bf16, its log-sum-exp per
    head in fp32 (4 heads) and the rotary cos and sin (2 x 2 head_dim); the SiLU-gated MLP's gate and up outputs and
    the SiLU output (3 x 2 I). With ``qk_norm`` (Qwen3) each per-head RMSNorm of q and k keeps its input in fp32 and
    an inverse RMS per head. Compared with autograd's saved tensors of a transformers LLaMA block, and of Qwen2.5-VL's
    and Qwen3-VL's text blocks, in tests/test_estimate.py.
    """
    h, heads = llama.hidden_size, llama.num_attention_heads
    kv_heads = getattr(llama, "num_key_value_heads", None) or heads
    head_dim = getattr(llama, "head_dim", None) or h // heads
    attention = 2 * 2 * (heads + kv_heads) * head_dim + 4 * heads + 2 * 2 * head_dim
    norms = 4 * (heads + kv_heads) * head_dim + 4 * (heads + kv_heads) if qk_norm else 0
    return 2 * 4 * h + 2 * 4 + attention + norms + 3 * 2 * llama.intermediate_size


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


def memory_estimate(counts: ParameterCounts, llama: PretrainedConfig, adapter: AdapterConfig, batch_size: int,
                    sequence_length: int, weight_dtype: str, checkpointing: bool,
                    vision_dtype: str = "fp32", shards: int = 1, projector_dtype: str = "fp32",
                    quantization: QuantizationConfig = QuantizationConfig()) -> dict[str, float]:
    """Bytes per component (see the module docstring for the model behind each term). ``llama``: the LLaMA's config
    or a transformers base's text config; ``projector_dtype``: what a frozen projector (connector) is held in, fp32
    for LLaVA's, the model's dtype for a transformers base's (a trained one is fp32 on both); ``quantization``: the
    quantized weights counted by their format (``model/quantization.py``'s :func:`linear_storage_bytes`)."""
    tokens = batch_size * sequence_length
    h, layers, vocab = llama.hidden_size, llama.num_hidden_layers, llama.vocab_size
    frozen = (frozen_bytes(counts.frozen_language, counts.quantizable_language, weight_dtype, quantization)
              + frozen_bytes(counts.frozen_vision, counts.quantizable_vision, vision_dtype,
                             quantization if quantization.vision else QuantizationConfig()))
    frozen_projector = 0 if counts.projector_trained else counts.projector * BYTES[projector_dtype]
    if counts.largest_unit is not None:  # a transformers base's frozen connector is sharded with its unit
        frozen, frozen_projector = frozen + frozen_projector, 0
    if shards > 1:
        if counts.largest_unit is not None:  # a transformers base: one dtype throughout
            largest_unit = counts.largest_unit * BYTES[weight_dtype]
        else:
            block = (counts.frozen_language - 2 * vocab * h - h) // layers  # embedding, LM head and final norm aside
            largest_unit = max(block * BYTES[weight_dtype], vocab * h * BYTES[weight_dtype],
                               counts.frozen_vision * BYTES[vision_dtype])
        frozen = frozen / shards + 2 * largest_unit
    adapters = [adapter_activation_bytes(adapter, block) for block in counts.adapted_layers]
    frozen_block = tokens * block_activation_bytes(llama, counts.qk_norm)
    if checkpointing:  # every block's input, and the largest block being recomputed
        activations = tokens * h * 2 * layers + frozen_block + tokens * max(adapters, default=0.0)
    else:
        activations = frozen_block * layers + tokens * sum(adapters)
    return {
        # The LLaMA in model.language.dtype, the tower in model.vision.dtype; LLaVA's projector is kept in fp32 (and
        # counted whole under FSDP: 0.08 GB).
        "frozen_weights": frozen + frozen_projector,
        "trainable_states": counts.trainable * 16,  # fp32 weights, gradients, AdamW moments
        "activations": activations,
        "logits": tokens * vocab * (2 + 4 + 4),
    }


def frozen_bytes(parameters: int, quantizable: list[tuple[int, int]], dtype: str,
                 quantization: QuantizationConfig) -> int:
    """Bytes of ``parameters`` frozen parameters in ``dtype``, the weights of shapes ``quantizable`` quantized by
    ``quantization`` (when it is on)."""
    if not quantization.enabled:
        return parameters * BYTES[dtype]
    quantized = sum(out_features * in_features for out_features, in_features in quantizable)
    return ((parameters - quantized) * BYTES[dtype]
            + sum(linear_storage_bytes(quantization, out_features, in_features)
                  for out_features, in_features in quantizable))


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
    adapter = AdapterConfig(**model["adapter"])
    train_projector = model["train_projector"]
    checkpointing = bool(model["gradient_checkpointing"])
    batch_size = args.batch_size or data["batch_size"]
    sequence_length = args.sequence_length or data["max_length"]
    targets = f"adapters on {', '.join(adapter.target_modules)}"
    tokens = f"batch {batch_size} x {sequence_length} tokens"
    sharding = f"FSDP: frozen weights sharded over {shards} processes" if shards > 1 else "no weight sharding"
    checkpointed = f"activation checkpointing {'on' if checkpointing else 'off'}"
    quantization = QuantizationConfig(**(model.get("quantization") or {}))
    if quantization.enabled and shards > 1:
        raise UserError("model.quantization: FSDP2 cannot shard quantized weights; estimate a quantized base on one "
                        "GPU (drop --shards and the FSDP strategy) or an unquantized one sharded")
    quantized = f"; {quantization.describe()}" if quantization.enabled else ""

    if model.get("base") == "transformers":
        base = TransformersConfig(**model["transformers"])
        shape = transformers_shape(base)
        text = shape.get_text_config()
        dtypes = {"weight_dtype": base.dtype, "vision_dtype": base.dtype, "projector_dtype": base.dtype}

        def count(variant: AdapterConfig) -> ParameterCounts:
            return count_transformers_parameters(shape, variant, train_projector)

        def describe(counts: ParameterCounts) -> str:
            heads = text.num_attention_heads
            kv_heads = getattr(text, "num_key_value_heads", None) or heads
            architecture = (shape.architectures or [shape.model_type])[0]
            return (f"{architecture} ({Path(base.path) / 'config.json'}): language model {text.num_hidden_layers} "
                    f"blocks x {text.hidden_size} wide ({kv_heads} of {heads} heads for keys and values), "
                    f"vocabulary {text.vocab_size}; vision tower {counts.frozen_vision:,} parameters, connector "
                    f"{counts.projector:,} ({'trained' if counts.projector_trained else 'frozen'}); {targets} (scope "
                    f"{adapter.scope}); {tokens}; frozen model in {base.dtype}{quantized}; {checkpointed}; {sharding}")
    else:
        vision = VisionConfig(**{k: v for k, v in model["vision"].items() if k != "checkpoint"})
        language = LanguageConfig(**model["language"])
        text = language_shape(language, model["tokenizer"], warnings)
        dtypes = {"weight_dtype": language.dtype, "vision_dtype": vision.dtype}

        def count(variant: AdapterConfig) -> ParameterCounts:
            return count_parameters(vision, text, variant, train_projector)

        def describe(counts: ParameterCounts) -> str:
            return (f"LLaMA {text.num_hidden_layers} blocks x {text.hidden_size} wide, vocabulary {text.vocab_size}; "
                    f"vision {vision.preset or 'custom'} ({vision.num_patches} patch tokens); {targets}; {tokens}; "
                    f"frozen LLaMA in {language.dtype}, vision tower in {vision.dtype}{quantized}; {checkpointed}; "
                    f"projector {'trained' if train_projector else 'frozen'}; {sharding}")

    rows = {"this config": adapter, **COMPARED}
    report, described = {}, None
    for name, variant in rows.items():
        variant = replace(variant, target_modules=adapter.target_modules, scope=adapter.scope)
        counts = count(variant)
        described = described or describe(counts)
        memory = memory_estimate(counts, text, variant, batch_size, sequence_length, checkpointing=checkpointing,
                                 shards=shards, quantization=quantization, **dtypes)
        report[name] = {"method": variant.method, "ranks": variant.ranks, "trainable_parameters": counts.trainable,
                        "adapter_parameters": counts.adapter, "memory_gib": {k: v / GIB for k, v in memory.items()},
                        "total_gib": sum(memory.values()) / GIB}

    for warning in warnings:
        print(f"note: {warning}")
    print(described)
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
