"""What a training checkpoint of :class:`~rode_lightning.model.module.FoodLMMModule` holds beyond Lightning's own state.

* Only the trainable tensors (adapters, the projector when trained, MoCLE's cluster embedding): the frozen vision
  encoder and language model come from the model as built (``model.language.path``, ``model.vision.checkpoint``),
  so a checkpoint of a 7B model weighs megabytes, not 13 GB. Loading checks the names against the built model.
* The random number generators (torch, CUDA, numpy, Python) of every process, which Lightning does not save: LoRA
  dropout and MoCLE's gate noise draw from them, so without them a resumed run would train on different dropout
  masks than the run it continues.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from rode_lightning.dtensors import is_dtensor
from rode_lightning.messages import first_names
from rode_lightning.user_errors import UserError

RNG_KEY = "rng_states"
FINGERPRINT_KEY = "frozen_fingerprint"


def trainable_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    return {name: parameter for name, parameter in module.named_parameters() if parameter.requires_grad}


def trainable_names(module: nn.Module) -> set[str]:
    return set(trainable_parameters(module))


def check_checkpoint_keys(module: nn.Module, keys: Iterable[str]) -> None:
    """Refuse a checkpoint ``state_dict`` that lacks a trainable parameter of ``module`` or names a tensor it does not
    have. Frozen tensors may be present (a full checkpoint) or absent (the usual, trainable-only one)."""
    keys = set(keys)
    missing = sorted(trainable_names(module) - keys)
    unexpected = sorted(keys - set(module.state_dict()))
    if missing or unexpected:
        raise UserError(
            "checkpoint does not fit the model: "
            f"missing trainable tensors: {first_names(missing)}; "
            f"tensors the model does not have: {first_names(unexpected)}. "
            "A checkpoint holds the trainable tensors of the model that wrote it; build the model with the same "
            "model.adapter (method, ranks, target_modules, num_clusters) and model.train_projector.")


def frozen_fingerprint(module: nn.Module) -> dict[str, torch.Tensor]:
    """The first 8 values of every frozen parameter, by name: enough to tell whether a checkpoint meets the frozen
    weights it was trained with, e.g. the demo's random language model built from another seed.

    Under FSDP2 a frozen parameter is split along its first dimension, and the rank holding the first part (global
    rank 0) reads the whole tensor's first values locally, with no collective. That rank's fingerprint is the one a
    checkpoint keeps (rank 0 writes the metadata) and the one compared on loading (rank 0 warns); the other ranks
    leave sharded parameters out."""
    fingerprint = {}
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            values = _leading_values(parameter)
            if values is not None:
                fingerprint[name] = values
    return fingerprint


def _leading_values(parameter: torch.Tensor, count: int = 8) -> torch.Tensor | None:
    """The first ``count`` values of the whole parameter in float64 on the CPU; ``None`` where this rank holds a
    later part of a sharded one (or it is sharded some other way)."""
    if is_dtensor(parameter):
        first_part = all(coordinate == 0 for coordinate in parameter.device_mesh.get_coordinate() or [1])
        only_rows = all(placement.is_replicate() or placement.is_shard(0) for placement in parameter.placements)
        if not (first_part and only_rows):
            return None
        parameter = parameter.to_local()
    if type(parameter).__module__.startswith("torchao"):
        # A weight quantized by torchao (model.quantization): a tensor subclass whose values are read dequantized;
        # its int4 formats cannot dequantize, and are left out. bitsandbytes' quantized parameters are plain integer
        # tensors: their codes are fingerprinted as they are.
        try:
            parameter = parameter.dequantize()
        except (NotImplementedError, AttributeError):
            return None
    return parameter.detach().flatten()[:count].double().cpu()


def frozen_weights_match(module: nn.Module, fingerprint: dict[str, torch.Tensor]) -> bool:
    """False when a frozen parameter fingerprinted in both differs; True when they agree or share none."""
    current = frozen_fingerprint(module)
    for name in sorted(current.keys() & fingerprint.keys()):
        mine, saved = current[name], fingerprint[name].cpu().double()
        if saved.dim() == 0:  # written before fingerprints kept the values: the sum of the first 8
            mine = mine.sum()
        else:
            length = min(len(mine), len(saved))
            mine, saved = mine[:length], saved[:length]
        if not torch.allclose(mine, saved, rtol=1e-2, atol=1e-3):
            return False
    return True


def collect_rng_states(device: torch.device | None = None) -> list[dict[str, Any]]:
    """The RNG states of every process, by global rank: under DDP each process draws different dropout masks (its
    batches differ in length), so each gets its own back. A collective under DDP, as checkpoint saving is.

    Tensors and plain values only, so ``torch.load(weights_only=True)`` (the default) reads them."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss)}
    if device is not None and device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [states]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, states)
    return gathered


def restore_rng_states(saved: list[dict[str, Any]], device: torch.device | None = None) -> None:
    """Set this process's RNG states from ``collect_rng_states``'s list (rank 0's when the run had fewer processes)."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    states = saved[rank] if rank < len(saved) else saved[0]
    torch.set_rng_state(states["torch"].cpu())
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)
