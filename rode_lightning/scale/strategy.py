"""FSDP2 training whose checkpoints hold the trainable state only, and resume from it.

Lightning's ``ModelParallelStrategy`` saves and restores the whole model: it collects every tensor of the module
(under ``save_distributed_checkpoint: false`` it even gathers the frozen 7B onto rank 0 to do so) and on resume asks
the checkpoint for every tensor back, so a checkpoint of the trainable state only (``scale/checkpointing.py``) fails
to load with ``Missing key in checkpoint state_dict: ...vision...``. :class:`AdapterFSDPStrategy` is the same strategy
with both ends narrowed to the trainable tensors: the frozen weights are never gathered, never written, and come back
on resume from the model as built (``model.language.path``, ``model.vision.checkpoint``).

This relies on what :func:`~rode_lightning.scale.sharding.shard_model` guarantees: every trainable tensor is whole on
every rank (a DTensor replicated over the data-parallel ranks), so rank-local values are the full values.

Both of Lightning's checkpoint formats work: a folder with one shard file per rank (``save_distributed_checkpoint:
true``, the default; torch.distributed.checkpoint writes each replicated tensor once) or one ``.ckpt`` file
(``false``). Both also load without FSDP: a single file as it is, a folder through ``scale/sharded_checkpoint.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import nn

from rode_lightning.adapters.saving import adapter_state_dict
from rode_lightning.compat import saves_distributed_checkpoint, sharded_checkpoint_metadata
from rode_lightning.dtensors import is_dtensor
from rode_lightning.scale.checkpointing import trainable_parameters
from rode_lightning.scale.sharded_checkpoint import is_sharded_checkpoint
from rode_lightning.user_errors import MissingFileError


class AdapterFSDPStrategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` (FSDP2 through ``fully_shard`` in ``configure_model``) with trainable-only
    checkpoints. Takes ``ModelParallelStrategy``'s arguments; configs/fsdp.yaml shows them."""

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The trainable tensors, by the module's own names: DTensors for a sharded checkpoint (each rank offers its
        replica, written once), their local (= whole) values on the CPU for a single-file one."""
        if saves_distributed_checkpoint(self):
            return {name: parameter.detach() for name, parameter in trainable_parameters(self.lightning_module).items()}
        return {name: tensor.cpu() for name, tensor in adapter_state_dict(self.lightning_module).items()}

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: str | Path,
                        storage_options: Any | None = None) -> None:
        """A sharded checkpoint folder complete or absent: every rank writes into a temporary folder beside it,
        which replaces the previous folder once all ranks are done (a single file goes through
        ``TrainingCheckpointIO``, which does the same for files)."""
        if not saves_distributed_checkpoint(self):
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        path = Path(self.broadcast(str(filepath)))
        partial = path.with_name(f".{path.name}.partial")
        if self.global_rank == 0 and partial.exists():
            shutil.rmtree(partial)  # left by a run killed while writing
        self.barrier("checkpoint-folder-clean")
        super().save_checkpoint(checkpoint, partial, storage_options)
        self.barrier("checkpoint-folder-written")
        if self.global_rank == 0:
            replace_folder(partial, path)
        self.barrier("checkpoint-folder-in-place")

    def load_checkpoint(self, checkpoint_path: str | Path, weights_only: bool | None = None) -> dict[str, Any]:
        """Restore the trainable tensors and optimizer states from either format; return the rest of the checkpoint
        (loops, schedulers, callbacks, RNG states) for Lightning to restore."""
        from torch.distributed.checkpoint import load as distributed_load
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                             set_optimizer_state_dict)

        path = Path(self.broadcast(str(checkpoint_path)))
        module = self.lightning_module
        strict = module.strict_loading
        if is_sharded_checkpoint(path):
            tensors = {name: torch.empty_like(parameter.detach())
                       for name, parameter in trainable_parameters(module).items()}
            distributed_load({"state_dict": tensors}, checkpoint_id=path)
            module.load_state_dict(tensors, strict=strict)
            options = StateDictOptions(cpu_offload=True)
            for index, optimizer in enumerate(self.optimizers):
                key = f"optimizer_{index}"
                state = {key: get_optimizer_state_dict(module, optimizer)}
                distributed_load(state, checkpoint_id=path)
                set_optimizer_state_dict(module, optimizer, optim_state_dict=state[key], options=options)
            return torch.load(sharded_checkpoint_metadata(path), weights_only=weights_only)
        if not path.is_file():
            raise MissingFileError(f"--ckpt_path {path}: no such checkpoint file or sharded checkpoint folder")

        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
        parameters = trainable_parameters(module)
        module.load_state_dict({name: _like(parameters[name], tensor) if name in parameters else tensor
                                for name, tensor in checkpoint.pop("state_dict").items()}, strict=strict)
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        for optimizer, state in zip(self.optimizers, checkpoint.pop("optimizer_states", [])):
            set_optimizer_state_dict(module, optimizer, optim_state_dict=_by_name(state, module), options=options)
        rank_zero_info(f"restored the trainable state from {path}")
        return checkpoint


def replace_folder(new: Path, target: Path) -> None:
    """Put the folder ``new`` where ``target`` is. A folder cannot replace another in one rename, so the old one is
    renamed aside first: a crash in between leaves ``target`` absent, never half-written."""
    previous = target.with_name(f".{target.name}.previous")
    if previous.exists():
        shutil.rmtree(previous)
    if target.is_dir():
        target.rename(previous)
    elif target.exists():
        target.unlink()
    new.rename(target)
    if previous.exists():
        shutil.rmtree(previous)


def _like(parameter: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` (a whole tensor from the file) in the form of ``parameter``: a DTensor with the same mesh and
    placements, whose local part is the whole value because the parameter is replicated."""
    if not is_dtensor(parameter):
        return value
    from torch.distributed.tensor import DTensor

    local = value.to(device=parameter.device, dtype=parameter.dtype)
    return DTensor.from_local(local, parameter.device_mesh, parameter.placements, run_check=False)


def _by_name(optimizer_state: dict[str, Any], module: nn.Module) -> dict[str, Any]:
    """Lightning saves a single-file optimizer state keyed by parameter name already; an older one by index."""
    from torch.distributed.fsdp import FullyShardedDataParallel, OptimStateKeyType

    if optimizer_state["state"] and isinstance(next(iter(optimizer_state["state"])), int):
        return FullyShardedDataParallel.rekey_optim_state_dict(optimizer_state, OptimStateKeyType.PARAM_NAME, module)
    return optimizer_state


def warn_if_checkpoints_cannot_resume(strategy) -> None:
    """Under FSDP2, only :class:`AdapterFSDPStrategy` resumes from the trainable-only checkpoints the module writes."""
    if strategy is not None and not isinstance(strategy, AdapterFSDPStrategy):
        rank_zero_warn(
            f"trainer.strategy is {type(strategy).__name__}: its checkpoints cannot be resumed with --ckpt_path, "
            "as it expects the frozen weights in them, which this module leaves out. Use "
            "rode_lightning.scale.strategy.AdapterFSDPStrategy (same arguments), as configs/fsdp.yaml does.")
