"""Stop training at the first NaN or infinite training loss, before it reaches the weights.

A non-finite loss gives non-finite gradients, and one AdamW step with them turns every trained tensor into NaN: the
run goes on, logs NaN and, worse, writes checkpoints of the ruined weights over the good ones. This callback looks at
the loss just before the backward pass (``on_before_backward``, i.e. also each micro-batch under gradient
accumulation) and raises :class:`NonFiniteLossError` there: no gradient of it is computed, no optimizer step or
checkpoint follows, and the last checkpoint on disk is the last good state to resume from with ``--ckpt_path``.
Lightning ends the run as failed (loggers are closed, ``on_exception`` hooks run; no checkpoint is written).

Under DDP the decision is agreed by all processes (a NaN on one rank stops every rank, instead of leaving the
others waiting in the gradient all-reduce).

Enable it in the YAML::

    trainer:
      callbacks:
        - class_path: rode_lightning.callbacks.nonfinite.NonFiniteLossGuard
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from rode_lightning.compat import last_checkpoint_saved


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and the last good checkpoint."""


class NonFiniteLossGuard(Callback):
    """Raise :class:`NonFiniteLossError` when a training loss is NaN or infinite, before its backward pass."""

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(not finite, all=False):
            return
        value = f"{loss.detach().float().item()}" if not finite else "finite here, non-finite on another process"
        epoch_loop = trainer.fit_loop.epoch_loop
        raise NonFiniteLossError(
            f"training loss is {value} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
            f"{epoch_loop.batch_idx} of the epoch): training stopped before its backward pass, so no weight was "
            f"updated with it and no checkpoint was written after it. {self._last_checkpoint(trainer)}")

    @staticmethod
    def _last_checkpoint(trainer: L.Trainer) -> str:
        paths = [last_checkpoint_saved(callback) or callback.last_model_path
                 for callback in trainer.checkpoint_callbacks if isinstance(callback, ModelCheckpoint)]
        paths = [path for path in paths if path]
        if not paths:
            return "No checkpoint had been written yet."
        return (f"The last checkpoint, from before this step: {paths[-1]} (resume from it with --ckpt_path, e.g. "
                "with a lower model.learning_rate).")
