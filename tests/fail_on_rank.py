"""A callback that makes one process of a distributed run fail at a training step, as a bad sample or a full disk
on one node would (used by tests/test_distributed.py)."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from rode_lightning.user_errors import UserError


class FailOnRank(Callback):
    def __init__(self, rank: int = 1, step: int = 1):
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step >= self.step:
            raise UserError(f"rank {self.rank} cannot go on at step {trainer.global_step} (a test's failure)")
