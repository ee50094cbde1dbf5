"""Routers: from a token's hidden state to one gate per expert.

Every router here is a bias-free linear map ``h(x) = W x`` (``W``: experts x d_in) followed by a different
normalisation, which is the only thing the compared methods disagree on:

* ``relu`` (RoDE Eq. 2): ``max(h(x), 0)``. Gates are sparse (an expert with a negative score is off) and
  unnormalised, so several experts can be fully on at once and the router is as easy to optimise as a linear layer.
* ``softmax`` (RoDE Eq. 1, FoodLMM+MoE): ``softmax(h(x))``, a dense convex combination.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearRouter(nn.Module):
    """Base class: holds the linear map; subclasses choose the normalisation in :meth:`gates_from_logits`."""

    def __init__(self, in_features: int, num_experts: int):
        super().__init__()
        self.linear = nn.Linear(in_features, num_experts, bias=False)

    @property
    def weight(self) -> torch.Tensor:
        """The router as a linear map, ``experts x d_in``."""
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gates_from_logits(self.linear(x))

    def gates_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ReLURouter(LinearRouter):
    def gates_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.relu(logits)


class SoftmaxRouter(LinearRouter):
    def gates_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=-1).to(logits.dtype)


ROUTERS: dict[str, type[LinearRouter]] = {"rode": ReLURouter, "softmax": SoftmaxRouter}
