"""The adapted linear layer: a frozen base layer plus a routed mixture of LoRA experts."""

from __future__ import annotations

import torch
from torch import nn

from rode_lightning.adapters.experts import LoRAExperts
from rode_lightning.adapters.routers import Router


class MixtureOfLoRALinear(nn.Module):
    """``y = W0 x + sum_i g_i(x) * alpha / r_i * B_i A_i x`` with ``g`` from the router.

    The gates of the last forward pass are kept (detached, ``tokens x experts``) in :attr:`last_gates` for inspection
    and for the router-sparsity statistics.
    """

    def __init__(self, base: nn.Linear, experts: LoRAExperts, router: Router):
        super().__init__()
        self.base = base
        self.experts = experts
        self.router = router
        self.last_gates: torch.Tensor | None = None

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        # Some transformers code reads ``layer.weight.dtype``/``device`` of projection layers.
        return self.base.weight

    @property
    def num_experts(self) -> int:
        """Experts in this layer, MoCLE's universal expert included (it is the last one)."""
        return self.experts.num_experts

    @property
    def aux_loss(self) -> torch.Tensor | None:
        """The router's auxiliary loss of the last training forward (top-1's load balancing), if any."""
        return self.router.last_aux_loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._router_folds_into_experts(x):
            mixture, gates = self.experts.forward_routed(x, self.router)
        else:
            gates = self.router(x)
            mixture = self.experts(x, gates, one_expert_per_token=self.router.one_expert_per_token)
        self.last_gates = gates.detach().reshape(-1, gates.shape[-1])
        return self.base(x) + mixture.to(x.dtype)

    def _router_folds_into_experts(self, x: torch.Tensor) -> bool:
        """Whether the router's matmul joins the experts' first one (:meth:`LoRAExperts.forward_routed`), in
        training as in inference: for a token router that reads the same ``x`` as the experts (no active dropout in
        between) in the experts' dtype, unless the experts run grouped by token (:meth:`LoRAExperts.groups_tokens`).
        One process, DDP and FSDP2 take the same path, so they compute the same floats and train the same
        adapter."""
        dropout_active = self.experts.training and isinstance(self.experts.dropout, nn.Dropout)
        return (self.router.reads_tokens and not dropout_active
                and self.router.linear.weight.dtype == self.experts.lora_A.dtype
                and not (self.router.one_expert_per_token and self.experts.groups_tokens(x)))

    def extra_repr(self) -> str:
        return f"ranks={list(self.experts.ranks)}, alpha={self.experts.alpha}, router={type(self.router).__name__}"
