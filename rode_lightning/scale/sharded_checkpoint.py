"""Sharded FSDP checkpoint folders, read in a process that is not part of an FSDP run.

``AdapterFSDPStrategy`` writes its checkpoints by default as a folder: one ``.distcp`` file per rank
(torch.distributed.checkpoint) and ``meta.pt`` with the loops, schedulers and hyperparameters. Lightning reads such a
folder only under ``ModelParallelStrategy``; every other strategy (one process, DDP) and ``load_from_checkpoint``
hand the path to ``torch.load``, which fails on a folder with ``IsADirectoryError``. Yet the folder of this module
holds the trainable tensors only, each whole (replicated over the ranks that wrote it), so it fits in memory and reads
into the dict a single-file checkpoint holds: :func:`read_sharded_checkpoint` does that, and
:class:`TrainingCheckpointIO` lets ``validate``, ``test``, ``predict`` and ``fit --ckpt_path`` take either.
:class:`TrainingCheckpointIO` also writes every checkpoint file complete or absent (``rode_lightning/atomic.py``).

Optimizer states stay keyed by parameter name, as FSDP saved them (``param_groups`` list names, not indices).
``torch.optim.Optimizer.load_state_dict`` pairs saved and current parameters by their position in the groups, so
the names load into a plain optimizer built over the same parameters in the same order, as ``configure_optimizers``
builds it in every strategy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import Strategy

from rode_lightning.atomic import replaced_atomically
from rode_lightning.compat import is_distributed_checkpoint_folder, load_distributed_checkpoint
from rode_lightning.user_errors import MissingFileError

_OPTIMIZER_KEY = re.compile(r"optimizer_(\d+)")


def is_sharded_checkpoint(path: Any) -> bool:
    """Whether ``path`` is a checkpoint folder written by torch.distributed.checkpoint (not a file, not a buffer)."""
    return isinstance(path, (str, Path)) and is_distributed_checkpoint_folder(path)


def read_sharded_checkpoint(folder: str | Path) -> dict[str, Any]:
    """The checkpoint in ``folder`` as one dict on the CPU, in the layout of a single ``.ckpt`` file: ``state_dict``,
    ``optimizer_states`` (a list, from the folder's ``optimizer_0``, ``optimizer_1``, ...) and everything else
    Lightning saved."""
    folder = Path(folder)
    if not is_sharded_checkpoint(folder):
        raise MissingFileError(f"{folder}: not a sharded checkpoint folder (expected the meta.pt file that "
                               "Lightning writes in it beside torch.distributed.checkpoint's shards)")
    checkpoint = load_distributed_checkpoint(folder)
    indices = sorted(int(match.group(1)) for key in checkpoint if (match := _OPTIMIZER_KEY.fullmatch(key)))
    if indices:
        checkpoint["optimizer_states"] = [checkpoint.pop(f"optimizer_{index}") for index in indices]
    return checkpoint


class TrainingCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` / ``torch.load`` checkpoint IO, which also reads sharded checkpoint folders and
    writes each checkpoint file complete or absent.

    Lightning's own writer serialises the checkpoint into memory and moves it into place from a temporary file in
    the system's temporary folder: across file systems (``/tmp`` on local disk, logs on a shared one) that move is
    a copy, which a preemption can cut short, leaving a truncated ``last.ckpt``. Here ``torch.save`` writes
    straight to a temporary file beside the checkpoint, which then replaces it in one rename (no second copy of
    the checkpoint in memory either).

    :class:`~rode_lightning.model.module.FoodLMMModule` installs it in ``setup`` (:func:`install_checkpoint_io`),
    before Lightning restores ``--ckpt_path``, so a run in one process or under DDP takes a checkpoint written under
    FSDP as it is."""

    def load_checkpoint(self, path: str | Path, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if is_sharded_checkpoint(path):
            return read_sharded_checkpoint(path)
        return super().load_checkpoint(path, *args, **kwargs)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
                        ) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's fsspec transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        with replaced_atomically(path) as partial:
            torch.save(checkpoint, partial)


def install_checkpoint_io(strategy: Strategy) -> None:
    """Give ``strategy`` a :class:`TrainingCheckpointIO`, unless it was given a checkpoint IO of its own. (Under
    ``ModelParallelStrategy``, which reads folders itself, it writes the single-file checkpoints.)"""
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = TrainingCheckpointIO()
