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
        gates = self.router(x)
        self.last_gates = gates.detach().reshape(-1, gates.shape[-1])
        mixture = self.experts.forward_top1 if self.router.sparse_execution else self.experts
        return self.base(x) + mixture(x, gates).to(x.dtype)

    def extra_repr(self) -> str:
        return f"ranks={list(self.experts.ranks)}, alpha={self.experts.alpha}, router={type(self.router).__name__}"
