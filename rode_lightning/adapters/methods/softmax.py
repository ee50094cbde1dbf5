"""The dense softmax mixture (RoDE Eq. 1, FoodLMM+MoE): every expert weighted by ``softmax(W x)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.methods.base import AdapterMethod
from rode_lightning.adapters.routers import Router, SoftmaxRouter

if TYPE_CHECKING:
    from rode_lightning.adapters.config import AdapterConfig


class SoftmaxMixture(AdapterMethod):
    name = "softmax"
    summary = "dense mixture weighted by a softmax router (RoDE Eq. 1)"

    def make_router(self, config: AdapterConfig, in_features: int, context: RoutingContext,
                    cluster_dim: int | None) -> Router:
        return SoftmaxRouter(in_features, config.num_experts, context)
