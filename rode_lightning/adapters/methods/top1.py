"""LLaVA-MoLE: each token runs the one expert with the highest router score, with a load-balancing loss."""

from __future__ import annotations

from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.methods.base import AdapterMethod, AdapterSettings
from rode_lightning.adapters.routers import Router, Top1Router


class Top1(AdapterMethod):
    name = "top1"
    summary = "LLaVA-MoLE: one expert per token, load-balancing loss"
    auxiliary_loss_name = "load_balancing_loss"

    def make_router(self, config: AdapterSettings, in_features: int, context: RoutingContext,
                    cluster_dim: int | None) -> Router:
        return Top1Router(in_features, config.num_experts, context)

    def auxiliary_loss_weight(self, config: AdapterSettings) -> float:
        return config.load_balancing_coefficient

    def activation_bytes(self, config: AdapterSettings, in_features: int) -> tuple[bool, float]:
        """As a mixture, except that the input grouped by expert is kept whether or not there is dropout (``2 D``),
        each token's rank-wide tensors are those of one expert (the largest bounds them) and the grouping keeps
        three int64 token indices (24 bytes)."""
        ranks = self.expert_ranks(config)
        dropout = in_features if config.dropout > 0 else 0
        return True, float(2 * in_features + dropout + 6 * max(ranks) + 2 * len(ranks) + 24)
