"""A callback that sends a signal to its own process at a training step, as a person pressing Ctrl-C or a cluster
preempting the job would (used by tests/test_interrupt.py)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class SignalAtStep(Callback):
    def __init__(self, step: int, name: str = "SIGINT"):
        self.step, self.signum, self.sent = step, getattr(signal, name), False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
