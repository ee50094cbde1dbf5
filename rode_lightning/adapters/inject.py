"""Putting adapters into a model by module-name patterns, and freezing everything else."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable

import torch
from torch import nn

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.layer import MixtureOfLoRALinear
from rode_lightning.user_errors import UserError

ALL_LINEAR = "all-linear"
"""The ``target_modules`` entry for every linear layer but the output layer, as peft's ``all-linear``."""

REGEX_PREFIX = "re:"
"""An entry of ``target_modules`` written ``re:<regex>`` is matched against the full module name."""

# Every regex character but ".", which in a module name separates the parts: an entry with one of these and no
# ``re:`` is a regex written before the prefix existed (matched as one, with a warning), while a dotted entry such as
# ``self_attn.q_proj`` is a name suffix, as in peft.
_OLD_REGEX_CHARACTERS = frozenset("*+?[](){}|^$\\")


def target_matcher(entry: str) -> Callable[[str], bool]:
    """The test a module's full name must pass to be adapted by the ``target_modules`` entry ``entry``.

    * ``re:<regex>``: ``re.fullmatch`` of the regex against the full name, e.g. ``re:.*layers\\.[01]\\..*q_proj``.
    * Otherwise the entry is a name suffix on module-name boundaries, dots included: the name equals the entry or
      ends with ``.<entry>``. ``q_proj`` matches ``model.layers.0.self_attn.q_proj``, and so does
      ``self_attn.q_proj``, but ``attn.q_proj`` does not. This is peft's rule for a list of names
      (``peft.tuners.tuners_utils.check_target_module_exists``: ``key in target_modules`` or
      ``key.endswith(f".{target_key}")``); peft takes a regex only as a single string instead of a list, which a
      list here cannot express, hence the prefix.
    * An entry with regex characters other than ``.`` and no prefix (``.*\\.q_proj``, an older configuration's
      spelling) is still matched as a full-name regex, with a ``FutureWarning`` that gives the ``re:`` spelling.

    A regex that does not compile raises ``UserError`` (a ``ValueError``) naming the entry.
    """
    if entry.startswith(REGEX_PREFIX):
        return _full_name_regex(entry, entry[len(REGEX_PREFIX):])
    if _OLD_REGEX_CHARACTERS & set(entry):
        # Quoted as written in YAML, not repr(), which would double every backslash of the regex.
        warnings.warn(f"adapter.target_modules: '{entry}' is read as a regex over the full module name; write it "
                      f"'{REGEX_PREFIX}{entry}' (an entry without '{REGEX_PREFIX}' is a name suffix, dots included, "
                      f"as in peft)", FutureWarning, stacklevel=3)
        return _full_name_regex(entry, entry)
    return lambda name: name == entry or name.endswith("." + entry)


def _full_name_regex(entry: str, regex: str) -> Callable[[str], bool]:
    try:
        compiled = re.compile(regex)
    except re.error as error:
        raise UserError(f"adapter.target_modules: '{entry}' is not a valid regex ({error})") from None
    return lambda name: compiled.fullmatch(name) is not None


def all_linear_matcher(model: nn.Module) -> Callable[[str], bool]:
    """``all-linear`` as peft defines it: every ``nn.Linear`` but the output layer (the vocabulary projection, which
    a transformers model names through ``get_output_embeddings()``; ``lm_head`` where it says nothing)."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    output_names = {name for name, module in model.named_modules() if output is not None and module is output}
    return lambda name: name not in output_names and name.rsplit(".", 1)[-1] != "lm_head"


def find_target_modules(model: nn.Module, patterns: list[str]) -> list[str]:
    """Names of the ``nn.Linear`` modules matched by ``patterns`` (:func:`target_matcher` gives the rule); each
    pattern must match at least one. The memory estimate (``rode_lightning/estimate.py``) counts the layers this
    returns, through :func:`inject_adapters`, so the two never disagree."""
    linear_names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    matched: list[str] = []
    for pattern in patterns:
        matches = all_linear_matcher(model) if pattern == ALL_LINEAR else target_matcher(pattern)
        hits = [name for name in linear_names if matches(name)]
        if not hits:
            leaf_names = sorted({name.rsplit(".", 1)[-1] for name in linear_names})
            example = f"; full names look like {linear_names[0]!r}" if linear_names else ""
            raise UserError(
                f"adapter.target_modules: pattern '{pattern}' matches no linear layer of the language model; "
                f"linear layer names available: {', '.join(leaf_names)}{example} (an entry is a name suffix, "
                f"e.g. self_attn.q_proj, or {REGEX_PREFIX}<regex> over the full name)"
            )
        matched.extend(name for name in hits if name not in matched)
    return matched


def describe_adapted_layers(names: list[str]) -> str:
    """The adapted layers in a few lines: names that differ only in their block number are one line, with the
    numbers as ranges (``model.layers.{0-31}.self_attn.q_proj (32 layers)``), in the order first seen."""
    groups: dict[str, list[int]] = {}
    for name in names:
        match = re.search(r"\.(\d+)\.", name)
        template = name if match is None else name[:match.start()] + ".{}." + name[match.end():]
        groups.setdefault(template, []).append(-1 if match is None else int(match.group(1)))
    lines = [f"adapted {len(names)} linear layer{'s' if len(names) != 1 else ''}:"]
    for template, numbers in groups.items():
        if numbers == [-1]:
            lines.append(f"  {template}")
            continue
        lines.append(f"  {template.format('{' + _ranges(sorted(numbers)) + '}')} ({len(numbers)} layers)")
    return "\n".join(lines)


def _ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``0-2,5,7-8``."""
    def run(first: int, last: int) -> str:
        return str(first) if first == last else f"{first}-{last}"

    parts, start, previous = [], numbers[0], numbers[0]
    for number in numbers[1:]:
        if number != previous + 1:
            parts.append(run(start, previous))
            start = number
        previous = number
    return ",".join([*parts, run(start, previous)])


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


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters the adapter methods put into ``model``, by name: the ``experts`` and ``router`` of every
    :class:`MixtureOfLoRALinear`, and the adapter weights of every peft tuner layer (``lora_A``, ``lora_B``,
    ``lora_embedding_*``, DoRA's ``lora_magnitude_vector``: what the layer's ``adapter_layer_names`` lists).

    Found by module type, not by parameter name: a base model may have modules of its own called ``experts``,
    ``router`` or ``gate`` (Qwen3-VL-MoE's ``mlp.experts``), which must stay frozen and stay out of the adapter
    checkpoint (``adapters/saving.py`` saves what is trainable).
    """
    # A peft layer exists only once peft is imported: without it, no module can be one, and importing peft here (with
    # bitsandbytes and torchao where installed: seconds) would tax every mixture model for a check that cannot hit.
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    base_tuner_layer = tuners.BaseTunerLayer if tuners is not None else ()
    created: set[int] = set()
    for module in model.modules():
        if isinstance(module, MixtureOfLoRALinear):
            parts = [module.experts, module.router]
        elif isinstance(module, base_tuner_layer):
            parts = [part for part in (getattr(module, attribute, None) for attribute in module.adapter_layer_names)
                     if isinstance(part, nn.Module)]
        else:
            continue
        created.update(id(parameter) for part in parts for parameter in part.parameters())
    return {name: parameter for name, parameter in model.named_parameters() if id(parameter) in created}


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
    trainable = {id(parameter) for parameter in adapter_parameters(model).values()}
    if names and not trainable:  # a method whose layers are neither mixture layers nor peft's: a bug, not a setting
        raise RuntimeError(f"adapter method {config.method!r} adapted {len(names)} layers but created no parameter "
                           "this package recognises as an adapter's (MixtureOfLoRALinear experts and router, or "
                           "peft LoRA layers): nothing would train")
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trainable)
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
