"""The vision-language projector of LLaVA-1.5: two linear layers with a GELU between them."""

from __future__ import annotations

import torch
from torch import nn


class MLPProjector(nn.Module):
    def __init__(self, vision_dim: int, text_dim: int):
        super().__init__()
        # Layer names match LLaVA's ``mm_projector.0`` / ``mm_projector.2`` so its weights load by index.
        self.layers = nn.Sequential(nn.Linear(vision_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim))

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.layers(image_features)
