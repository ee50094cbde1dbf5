"""MoCLE: the expert is chosen by the sample's instruction cluster, and a universal expert is always added.

The cluster's learnable embedding (one row per cluster, shared by every layer's gate, MoCLE Eq. 1) is this method's
extra trainable state; the data side's k-means centroids initialise it.
"""

from __future__ import annotations

import torch
from torch import nn

from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.methods.base import AdapterMethod, AdapterSettings
from rode_lightning.adapters.routers import ClusterRouter, Router
from rode_lightning.conventions import CLUSTER_WIDTH


class ClusterRouting(AdapterMethod):
    name = "cluster"
    summary = "MoCLE: expert chosen by the instruction's cluster, plus a universal expert"
    needs_cluster_features = True
    routes_tokens = False
    structural_keys = (*AdapterMethod.structural_keys, "num_clusters", "universal_rank")

    def expert_ranks(self, config: AdapterSettings) -> list[int]:
        """The cluster experts, then the universal expert (the layer's last)."""
        return [*config.ranks, config.universal_rank or max(config.ranks)]

    def make_router(self, config: AdapterSettings, in_features: int, context: RoutingContext,
                    cluster_dim: int | None) -> Router:
        if cluster_dim is None:
            raise ValueError("adapter.method 'cluster' needs the cluster embedding width (cluster_dim)")
        return ClusterRouter(cluster_dim, config.num_experts, config.cluster_temperature, context)

    def cluster_embedding(self, config: AdapterSettings, centroids: torch.Tensor | None) -> nn.Parameter:
        """``num_clusters x width``, starting at the centroids; random and ``CLUSTER_WIDTH`` wide without them (a
        model built before its checkpoint is loaded takes the checkpoint's width, ``FoodLMM.set_cluster_width``)."""
        if centroids is None:
            centroids = torch.randn(config.num_clusters, CLUSTER_WIDTH)
        if centroids.shape[0] != config.num_clusters:
            raise ValueError(f"adapter.num_clusters is {config.num_clusters} but {centroids.shape[0]} "
                             "cluster centroids were given")
        return nn.Parameter(centroids.detach().clone().float())
