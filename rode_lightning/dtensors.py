"""Telling FSDP2's DTensors from plain tensors, and reading a whole value from one.

On the ground floor because both the adapter-only save (``adapters/saving.py``) and the training-at-scale plumbing
(``scale/``) read FSDP2 parameters, and neither should import the other for it. Nothing here imports
``torch.distributed``: a run without it never pays for the import.
"""

from __future__ import annotations

import torch


def is_dtensor(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a DTensor (an FSDP2 parameter), without importing the distributed package."""
    return hasattr(tensor, "placements") and hasattr(tensor, "device_mesh")


def is_replicated(tensor: torch.Tensor) -> bool:
    """Whether every rank holds the whole tensor: a plain tensor, or a DTensor replicated or sharded over a one-wide
    mesh dimension (its local part is then the whole value)."""
    if not is_dtensor(tensor):
        return True
    mesh = tensor.device_mesh
    return all(placement.is_replicate() or mesh.size(dim) == 1 for dim, placement in enumerate(tensor.placements))


def whole_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of ``tensor`` on this rank: its local part when replicated (no communication), else gathered
    from every rank (a collective, which every rank must join)."""
    if not is_dtensor(tensor):
        return tensor
    return tensor.to_local() if is_replicated(tensor) else tensor.full_tensor()
