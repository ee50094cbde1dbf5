"""Routers: from a token (or a sample) to one gate per expert.

The compared methods differ only here:

* ``rode`` (RoDE Eq. 2): ``max(W x, 0)``. Sparse (an expert with a negative score is off), unnormalised (several
  experts can be fully on at once), and as easy to optimise as a linear layer.
* ``softmax`` (RoDE Eq. 1, FoodLMM+MoE): ``softmax(W x)``, a dense convex combination.
* ``top1`` (LLaVA-MoLE Eq. 3-8): only the expert with the highest score ``W x`` counts. Its output is multiplied by
  that expert's softmax probability (as Switch Transformer does), which is 1-sparse yet differentiable, so the
  language-modelling loss reaches the router; the load-balancing loss (Eq. 7-8) pushes towards uniform use.
* ``cluster`` (MoCLE Eq. 1-3): routing by the sample's instruction cluster, not by token: the cluster's learnable
  embedding ``C`` goes through this layer's gate, ``G = top1(softmax((W_gate C + eps) / tau))`` with
  ``eps ~ N(0, 1/E)`` in training only, plus a universal expert weighted ``1 - G_max``.

Every router returns gates with the input's leading shape and one column per expert of its layer.
"""

from __future__ import annotations

import torch
from torch import nn

from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.precision import matmul_input


class Router(nn.Module):
    """The base of every router: a bias-free linear map ``h(x) = W x`` (``W``: experts x d_in) scoring the experts,
    and the routing context it reads. Token routers (ReLU, softmax, top-1) score each token and choose the
    normalisation in :meth:`gates_from_logits`; the cluster router scores a sample's cluster embedding instead."""

    reads_tokens = True  # the linear map reads the layer input (the cluster router reads a cluster embedding)
    one_expert_per_token = False  # True: every gate row has one non-zero (the experts may then run grouped)

    def __init__(self, in_features: int, num_experts: int, context: RoutingContext | None = None):
        super().__init__()
        self.linear = nn.Linear(in_features, num_experts, bias=False)
        self.context = context if context is not None else RoutingContext()
        self.last_aux_loss: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The router as a linear map, ``experts x d_in``."""
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gates_from_logits(self.linear(matmul_input(x, self.linear.weight)))

    def gates_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ReLURouter(Router):
    """With ``l1_penalty`` (set for ``adapter.sparsity_target``), a training forward also keeps ReMoE's L1 term,
    the mean gate over real tokens and experts (gates are non-negative), as its auxiliary loss, and the counts of
    zero and all gates, which ``adapters/sparsity.py`` turns into the step's sparsity."""

    l1_penalty = False

    def gates_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        gates = torch.relu(logits)
        if self.l1_penalty and self.training:
            # Padding weighted out rather than indexed out: no host synchronisation, no graph break.
            flat = gates.reshape(-1, gates.shape[-1]).float()
            real = _real_token_weights(self.context.token_mask, logits.shape[:-1], flat)
            values = real.sum() * flat.shape[-1]  # real tokens x experts
            self.last_aux_loss = (flat * real).sum() / values.clamp(min=1)
            self.last_gate_counts = torch.stack([((flat == 0) * real).sum(), values]).round().long()
        return gates


class SoftmaxRouter(Router):
    def gates_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=-1).to(logits.dtype)


def _real_token_weights(mask: torch.Tensor | None, tokens_shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """``(tokens, 1)`` in ``like``'s dtype: 1 for the real tokens of the routing context's mask, 0 for padding; all
    ones without a mask or with one that is not this forward's (``tokens_shape``; e.g. a decoding step)."""
    if mask is None or mask.shape != tokens_shape:
        return like.new_ones(like.shape[0], 1)
    return mask.reshape(-1, 1).to(like.dtype)


def load_balancing_loss(probabilities: torch.Tensor, chosen: torch.Tensor, mask: torch.Tensor | None
                        ) -> torch.Tensor:
    """LLaVA-MoLE Eq. 7-8, ``sum_j c_j * p_j``, over real tokens only.

    ``c_j`` (tokens routed to expert j, not differentiable) and ``p_j`` (summed routing probability of expert j) are
    both divided by the number of tokens N. The paper's raw sums would make the loss grow with N^2, so its
    coefficient (1e-2) could not mean the same thing for two batch shapes; normalised, a uniform assignment gives
    ``1 / E`` and a collapsed one gives 1. Padding is weighted out, not indexed out, so nothing waits for the host.
    """
    tokens_shape = probabilities.shape[:-1]
    probabilities = probabilities.reshape(-1, probabilities.shape[-1]).float()
    real = _real_token_weights(mask, tokens_shape, probabilities)
    # one_hot would first check every index on the host (a min over them); scatter trusts them.
    assigned = torch.zeros_like(probabilities).scatter_(-1, chosen.reshape(-1, 1), 1.0)
    tokens = real.sum().clamp(min=1)
    counts = (assigned * real).sum(dim=0)
    return (counts / tokens * (probabilities * real).sum(dim=0) / tokens).sum()


class Top1Router(Router):
    one_expert_per_token = True

    def gates_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(logits.float(), dim=-1)
        top, chosen = probabilities.max(dim=-1, keepdim=True)  # ties go to the first expert, as argmax's do
        if self.training:
            self.last_aux_loss = load_balancing_loss(probabilities, chosen, self.context.token_mask)
        # The chosen expert's probability in its column, zeros elsewhere; its gradient reaches the router.
        return torch.zeros_like(probabilities).scatter(-1, chosen, top).to(logits.dtype)


class ClusterRouter(Router):
    """MoCLE's gate: per-sample gates from the sample's cluster embedding, plus a universal expert's gate.

    The linear map reads the cluster embedding (``cluster_dim`` wide), not the token. Returns ``E + 1`` columns:
    the top-1 gate over the ``E`` cluster experts, then ``1 - G_max`` for the universal expert (the layer's last).
    """

    reads_tokens = False

    def __init__(self, cluster_dim: int, num_experts: int, temperature: float = 0.05,
                 context: RoutingContext | None = None):
        super().__init__(cluster_dim, num_experts, context)
        self.temperature = temperature

    def sample_gates(self, cluster_features: torch.Tensor) -> torch.Tensor:
        """``(batch, cluster_dim)`` cluster embeddings to ``(batch, E + 1)`` gates (Eq. 1 and 3)."""
        logits = self.linear(cluster_features.to(self.linear.weight.dtype)).float()
        if self.training:
            logits = logits + torch.randn_like(logits) * logits.shape[-1] ** -0.5  # N(0, 1/E)
        probabilities = torch.softmax(logits / self.temperature, dim=-1)
        top_value, top_index = probabilities.max(dim=-1, keepdim=True)
        gates = torch.zeros_like(probabilities).scatter(-1, top_index, top_value)
        return torch.cat([gates, 1.0 - top_value], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.context.cluster_features
        if features is None:
            raise RuntimeError("cluster routing needs each sample's cluster: call the model with cluster_ids")
        if features.shape[0] != x.shape[0]:
            raise RuntimeError(f"cluster features for {features.shape[0]} samples, but the layer input has "
                               f"batch size {x.shape[0]}")
        gates = self.sample_gates(features).to(x.dtype)
        # Same gates for every token of a sample.
        return gates.reshape(gates.shape[0], *([1] * (x.dim() - 2)), gates.shape[-1]).expand(*x.shape[:-1], -1)
