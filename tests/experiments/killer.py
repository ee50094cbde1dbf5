"""A callback that kills its own process at a training step, as a preemption would (used by test_runner.py).

With ``once``, a file that marks the kill as done: the resumed fit, the same command with the same callback, trains
on (the grid runner resumes only a checkpoint written by the same fit command)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    def __init__(self, step: int, once: str | None = None):
        self.step = step
        self.once = Path(once) if once else None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step and not (self.once and self.once.exists()):
            if self.once:
                self.once.touch()
            os.kill(os.getpid(), signal.SIGKILL)
