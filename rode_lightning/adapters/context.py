"""Per-forward information that routers need but a ``nn.Linear`` call does not carry.

Adapted layers sit deep inside a transformers model whose ``forward`` only passes hidden states to ``q_proj`` and
friends. Two routers need more: top-1 excludes padding tokens from its load-balancing loss, and the cluster router
routes by each *sample's* instruction cluster. Rather than patching transformers, the model fills one shared
:class:`RoutingContext` before calling the language model, and every router of that model reads from it. The
context stays set after the forward so that activation checkpointing, which re-runs layers during backward, sees
the same values; ``generate`` sets it once and every decoding step reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RoutingContext:
    token_mask: torch.Tensor | None = None  # (batch, sequence) bool, True for real tokens
    cluster_features: torch.Tensor | None = None  # (batch, cluster_dim): the cluster embedding of each sample

    def clear(self) -> None:
        self.token_mask = None
        self.cluster_features = None
