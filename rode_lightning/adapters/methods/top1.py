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
        """A mixture's terms (its experts run as the dense mixture's, with zero gates but one), plus the fp32
        one-hot choice that selects the gate, ``4 E``, and the load-balancing loss's real-token weight, 4."""
        keeps_input, own = super().activation_bytes(config, in_features)
        return keeps_input, own + 4 * config.num_experts + 4
