"""Putting adapters into a model by module-name patterns, and freezing everything else."""

from __future__ import annotations

import re

import torch
from torch import nn

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.layer import MixtureOfLoRALinear

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

    The method (``adapters/methods/``) builds each layer: ``lora`` with ``peft``'s own LoRA layers, the mixtures
    with :class:`MixtureOfLoRALinear`. All routers share ``context`` (see :mod:`rode_lightning.adapters.context`);
    a method that routes by cluster needs ``cluster_dim``, the width of the cluster embedding.
    """
    names = find_target_modules(model, config.target_modules)
    context = context if context is not None else RoutingContext()
    config.adapter_method.inject(model, names, config, context, cluster_dim)
    return names


def adapter_layers(model: nn.Module) -> dict[str, MixtureOfLoRALinear]:
    """Every mixture layer of ``model`` by module name (empty for plain LoRA)."""
    return {name: module for name, module in model.named_modules() if isinstance(module, MixtureOfLoRALinear)}


def is_adapter_parameter(name: str) -> bool:
    """Parameters created by adapters: mixture experts and routers, or peft's LoRA matrices."""
    return any(part in name for part in (".experts.", ".router.", "lora_A", "lora_B"))


def add_adapters(model: nn.Module, config: AdapterConfig, cluster_dim: int | None = None,
                 context: RoutingContext | None = None) -> list[str]:
    """Adapt any PyTorch or transformers model for training with ``config``'s method, as peft's ``get_peft_model``
    does: every targeted linear layer gets its adapter (in place), every other parameter is frozen. Returns the
    adapted layers' names.

    The routers of the model share one :class:`RoutingContext` (``context``, a new one by default;
    :func:`routing_context` finds it): set its ``token_mask`` to the batch's attention mask so that top-1's load
    balancing counts real tokens only, and for ``cluster`` its ``cluster_features`` (one ``cluster_dim``-wide row
    per sample) before each forward.
    """
    names = inject_adapters(model, config, context if context is not None else RoutingContext(), cluster_dim)
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
