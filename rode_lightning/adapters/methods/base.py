"""What every adaptation method declares, so that the rest of the package asks the method instead of comparing
method names.

A method is one subclass of :class:`AdapterMethod` in its own module of this folder, registered by one line in
``methods/__init__.py``. The defaults describe a mixture of LoRA experts (``adapters/layer.py``) with a token router:
each method overrides only what differs, and the model, the CLI, adapter saving and the memory estimate read it:

* the layer it puts in place of a targeted ``nn.Linear`` (:meth:`AdapterMethod.adapt` and :meth:`~.make_router`,
  the experts' ranks in :meth:`~.expert_ranks`, a universal expert among them or not);
* what it needs per forward: :attr:`~.needs_cluster_features` (each sample's cluster embedding in the routing
  context, and the trainable embedding itself, :meth:`~.cluster_embedding`); the token mask is always set;
* its auxiliary loss (name and weight) and whether ``adapter.sparsity_target`` applies;
* the settings an adapter checkpoint must agree on (:attr:`~.structural_keys`);
* what its layers keep for backward, for ``python -m rode_lightning.estimate`` (:meth:`~.activation_bytes`).
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch
from torch import nn

from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.experts import LoRAExperts
from rode_lightning.adapters.layer import MixtureOfLoRALinear
from rode_lightning.adapters.routers import Router
from rode_lightning.user_errors import UserError


class AdapterSettings(Protocol):
    """What a method reads of ``adapters/config.py``'s AdapterConfig. The config asks the registry to validate it,
    so the methods name the fields they read rather than import the config (no import circle)."""

    method: str
    ranks: list[int]
    alpha: float
    dropout: float
    load_balancing_coefficient: float
    num_clusters: int
    cluster_temperature: float
    universal_rank: int | None
    sparsity_target: float | None

    @property
    def num_experts(self) -> int: ...


class AdapterMethod:
    """One adaptation method; the defaults are those of a token-routed mixture of LoRA experts."""

    name: ClassVar[str]
    """``adapter.method`` in a config."""
    summary: ClassVar[str] = ""
    """One line for ``--help`` (:meth:`describe`): the paper and the routing rule."""
    needs_cluster_features: ClassVar[bool] = False
    """Routes by each sample's instruction cluster: the data side clusters instructions, the model holds a
    trainable cluster embedding and puts each sample's row in the routing context before every forward."""
    supports_sparsity_target: ClassVar[bool] = False
    """``adapter.sparsity_target`` (ReMoE's adaptive L1 penalty on the gates) applies to this router."""
    auxiliary_loss_name: ClassVar[str | None] = None
    """Logged as ``train/<name>`` when the routers report an auxiliary loss and no sparsity target weights it."""
    structural_keys: ClassVar[tuple[str, ...]] = ("method", "ranks", "alpha", "target_modules")
    """AdapterConfig fields that change which tensors exist or what they mean: an adapter checkpoint loads only into
    a model that agrees on every one (the other fields, dropout and coefficients, may differ)."""
    routes_tokens: ClassVar[bool] = True
    """The router reads every token (and so keeps the layer input for backward), as opposed to per-sample routing."""
    is_one_lora: ClassVar[bool] = False
    """The adapter is one plain LoRA per layer in peft's own layers (no router): ``export`` writes it in peft's format
    and ``merge`` folds it into the base; a routed mixture has no single LoRA to write."""

    def describe(self) -> str:
        """:attr:`summary`, or the first line of the class's docstring for a method that sets none, so that every
        registered method says what it is in ``python -m rode_lightning fit --help``."""
        lines = (type(self).__doc__ or "").strip().splitlines()
        return self.summary or (lines[0].strip() if lines else "")

    def validate(self, config: AdapterSettings) -> None:
        """Raise ``UserError`` (``rode_lightning.user_errors``) naming the field for a setting this method cannot take
        (called by AdapterConfig): the command line reports it in one line, where a plain ``ValueError`` would show
        as a bug, with its traceback."""
        if config.sparsity_target is not None and not self.supports_sparsity_target:
            from rode_lightning.adapters.methods import METHODS  # the registry imports this module

            takers = ", ".join(repr(name) for name, method in METHODS.items() if method.supports_sparsity_target)
            raise UserError(f"adapter.sparsity_target: only method {takers} (ReLU routing) has it, not {self.name!r}")

    def expert_ranks(self, config: AdapterSettings) -> list[int]:
        """Ranks of the experts each adapted layer holds."""
        return list(config.ranks)

    def make_router(self, config: AdapterSettings, in_features: int, context: RoutingContext,
                    cluster_dim: int | None) -> Router:
        raise NotImplementedError(f"method {self.name!r} defines no router")

    def adapt(self, base: nn.Linear, config: AdapterSettings, context: RoutingContext,
              cluster_dim: int | None) -> nn.Module:
        """The module that replaces ``base``: the frozen layer plus this method's routed experts."""
        experts = LoRAExperts(base.in_features, base.out_features, self.expert_ranks(config), config.alpha,
                              config.dropout)
        router = self.make_router(config, base.in_features, context, cluster_dim)
        # Trainable tensors in fp32 even over a bf16/fp16 base: optimizer updates of 1e-4 relative size vanish in
        # bf16's 8-bit mantissa. The layer casts inputs to them and its output back to the base's dtype.
        dtype = base.weight.dtype if base.weight.dtype in (torch.float32, torch.float64) else torch.float32
        experts.to(device=base.weight.device, dtype=dtype)
        router.to(device=base.weight.device, dtype=dtype)
        return MixtureOfLoRALinear(base, experts, router)

    def inject(self, model: nn.Module, names: list[str], config: AdapterSettings, context: RoutingContext,
               cluster_dim: int | None) -> None:
        """Replace each named linear layer of ``model`` by :meth:`adapt`'s module, in place."""
        for name in names:
            parent_name, _, child_name = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child_name, self.adapt(getattr(parent, child_name), config, context, cluster_dim))

    def cluster_embedding(self, config: AdapterSettings, centroids: torch.Tensor | None) -> nn.Parameter | None:
        """The extra trainable state of cluster routing (None for every other method)."""
        return None

    def auxiliary_loss_weight(self, config: AdapterSettings) -> float:
        """Weight of the routers' auxiliary loss in the training loss (when no sparsity target sets it)."""
        return 0.0

    def activation_bytes(self, config: AdapterSettings, in_features: int) -> tuple[bool, float]:
        """What one adapted layer reading ``in_features`` keeps for backward per token, in bf16 mixed precision on
        a GPU: whether it keeps the layer input (``2 D`` bytes, counted once for layers that read the same tensor)
        and the bytes of its own. For a mixture with ``r`` the summed ranks and ``E`` experts:

        * the input is kept when a token router reads it, or when the first expert matmul reads it (no dropout);
        * with dropout, the dropped input, ``2 D``, and its mask, ``D`` (CUDA keeps it as bools);
        * the rank-wide activation, its per-column gates and their product, ``6 r``, and the gates, ``2 E``;
        * without dropout a token router's logits, ``2 E``: its matmul is folded into the experts' first one, and the
          kept rank-wide activation is a view of that ``r + E`` wide output.

        Compared with autograd's saved tensors of real layers in tests/test_estimate.py.
        """
        dropout = config.dropout > 0
        ranks = self.expert_ranks(config)
        folded_logits = 2 * len(ranks) if self.routes_tokens and not dropout else 0
        own = (3 * in_features if dropout else 0) + 6 * sum(ranks) + 2 * len(ranks) + folded_logits
        return self.routes_tokens or not dropout, float(own)
