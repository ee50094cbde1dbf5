"""RoDE (Eq. 2): LoRA experts of diverse ranks mixed by a ReLU-rectified linear router, ``g = max(W x, 0)``."""

from __future__ import annotations

from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.methods.base import AdapterMethod, AdapterSettings
from rode_lightning.adapters.routers import ReLURouter, Router


class RoDE(AdapterMethod):
    name = "rode"
    summary = "RoDE: experts mixed by a ReLU-rectified linear router (sparse, unnormalised gates)"
    supports_sparsity_target = True
    auxiliary_loss_name = "router_l1"  # with adapter.sparsity_target; its weight is ReMoE's adaptive coefficient

    def make_router(self, config: AdapterSettings, in_features: int, context: RoutingContext,
                    cluster_dim: int | None) -> Router:
        router = ReLURouter(in_features, config.num_experts, context)
        router.l1_penalty = config.sparsity_target is not None
        return router
