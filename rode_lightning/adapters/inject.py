"""Putting adapters into a model by module-name patterns, and freezing everything else."""

from __future__ import annotations

import re

import torch
from torch import nn

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.experts import LoRAExperts
from rode_lightning.adapters.layer import MixtureOfLoRALinear
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.routers import TOKEN_ROUTERS, ClusterRouter

_REGEX_CHARACTERS = set(".*+?[](){}|^$\\")


def _matches(pattern: str, name: str) -> bool:
    if _REGEX_CHARACTERS & set(pattern):
        return re.fullmatch(pattern, name) is not None
    return name == pattern or name.endswith("." + pattern)


def find_target_modules(model: nn.Module, patterns: list[str]) -> list[str]:
    """Names of the ``nn.Linear`` modules matched by ``patterns``; each pattern must match at least one."""
    linear_names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    matched: list[str] = []
    for pattern in patterns:
        hits = [name for name in linear_names if _matches(pattern, name)]
        if not hits:
            leaf_names = sorted({name.rsplit(".", 1)[-1] for name in linear_names})
            raise ValueError(
                f"adapter.target_modules: pattern {pattern!r} matches no linear layer of the language model; "
                f"linear layer names available: {', '.join(leaf_names)}"
            )
        matched.extend(name for name in hits if name not in matched)
    return matched


def inject_adapters(model: nn.Module, config: AdapterConfig, context: RoutingContext | None = None,
                    cluster_dim: int | None = None) -> list[str]:
    """Replace every targeted linear layer of ``model`` by its adapted version, in place; return their names.

    ``method: lora`` uses ``peft``'s own LoRA layers so that the baseline is the implementation users already trust;
    the mixtures use :class:`MixtureOfLoRALinear`. All routers share ``context`` (see
    :mod:`rode_lightning.adapters.context`); ``cluster`` needs ``cluster_dim``, the width of the cluster embedding.
    """
    names = find_target_modules(model, config.target_modules)
    if config.method == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(r=config.ranks[0], lora_alpha=config.alpha, lora_dropout=config.dropout,
                          target_modules=names, bias="none")
        inject_adapter_in_model(lora, model)
        # As peft's get_peft_model does: fp32 LoRA matrices over a bf16/fp16 base (see the mixtures below).
        from peft.tuners.tuners_utils import cast_adapter_dtype

        cast_adapter_dtype(model, "default", autocast_adapter_dtype=True)
        return names
    if config.method == "cluster" and cluster_dim is None:
        raise ValueError("adapter.method 'cluster' needs the cluster embedding width (cluster_dim)")
    context = context if context is not None else RoutingContext()
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base: nn.Linear = getattr(parent, child_name)
        experts = LoRAExperts(base.in_features, base.out_features, config.layer_ranks, config.alpha, config.dropout)
        if config.method == "cluster":
            router = ClusterRouter(cluster_dim, config.num_experts, config.cluster_temperature, context)
        else:
            router = TOKEN_ROUTERS[config.method](base.in_features, config.num_experts, context)
            router.l1_penalty = config.sparsity_target is not None
        # Trainable tensors in fp32 even over a bf16/fp16 base: optimizer updates of 1e-4 relative size vanish in
        # bf16's 8-bit mantissa. The layer casts inputs to them and its output back to the base's dtype.
        dtype = base.weight.dtype if base.weight.dtype in (torch.float32, torch.float64) else torch.float32
        experts.to(device=base.weight.device, dtype=dtype)
        router.to(device=base.weight.device, dtype=dtype)
        adapted = MixtureOfLoRALinear(base, experts, router)
        setattr(parent, child_name, adapted)
    return names


def adapter_layers(model: nn.Module) -> dict[str, MixtureOfLoRALinear]:
    """Every mixture layer of ``model`` by module name (empty for plain LoRA)."""
    return {name: module for name, module in model.named_modules() if isinstance(module, MixtureOfLoRALinear)}


def is_adapter_parameter(name: str) -> bool:
    """Parameters created by adapters: mixture experts and routers, or peft's LoRA matrices."""
    return any(part in name for part in (".experts.", ".router.", "lora_A", "lora_B"))


def add_adapters(model: nn.Module, config: AdapterConfig, cluster_dim: int | None = None) -> list[str]:
    """Adapt any PyTorch or transformers model for training with ``config``'s method, as peft's ``get_peft_model``
    does: every targeted linear layer gets its adapter (in place), every other parameter is frozen. Returns the
    adapted layers' names.

    The routers of the model share one :class:`RoutingContext` (:func:`routing_context`): set its ``token_mask``
    to the batch's attention mask so that top-1's load balancing counts real tokens only, and for ``cluster``
    its ``cluster_features`` (one ``cluster_dim``-wide row per sample) before each forward.
    """
    names = inject_adapters(model, config, RoutingContext(), cluster_dim)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_adapter_parameter(name))
    return names


def routing_context(model: nn.Module) -> RoutingContext | None:
    """The routing context shared by the routers of ``model`` (None for plain LoRA, which has no router)."""
    for layer in adapter_layers(model).values():
        return layer.router.context
    return None


def auxiliary_loss(model: nn.Module) -> torch.Tensor | None:
    """Mean over the adapted layers of their routers' auxiliary losses from the last training forward (top-1's
    load balancing, ReMoE's L1 term), or None when no router has one; add it, weighted, to the training loss."""
    losses = [layer.aux_loss for layer in adapter_layers(model).values() if layer.aux_loss is not None]
    return torch.stack(losses).mean() if losses else None
