"""The dense softmax mixture (RoDE Eq. 1, FoodLMM+MoE): every expert weighted by ``softmax(W x)``."""

from __future__ import annotations

from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.methods.base import AdapterMethod, AdapterSettings
from rode_lightning.adapters.routers import Router, SoftmaxRouter


class SoftmaxMixture(AdapterMethod):
    name = "softmax"
    summary = "dense mixture weighted by a softmax router (RoDE Eq. 1)"

    def make_router(self, config: AdapterSettings, in_features: int, context: RoutingContext,
                    cluster_dim: int | None) -> Router:
        return SoftmaxRouter(in_features, config.num_experts, context)
