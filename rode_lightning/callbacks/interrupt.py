"""Ctrl-C and SIGTERM during ``fit`` end the run at the next optimizer step with a resumable checkpoint.

Without this, Ctrl-C (SIGINT) makes Lightning tear the run down where it stands, and a cluster's SIGTERM ends it at
the next batch, mid gradient-accumulation window if need be; either way the work since the last scheduled
checkpoint is lost. Here the first signal only asks to stop: at the next optimizer step boundary, the same place
``ModelCheckpoint(every_n_train_steps=...)`` saves, every process (they agree by one small all-reduce, so all stop
at the same step) writes ``<log dir>/checkpoints/interrupted-step=<S>.ckpt``, the command that resumes is printed,
and the run ends; resumed with that command it finishes with the weights an uninterrupted run ends with (the
checkpoint holds the data position and every random state, ``scale/checkpointing.py``). A second Ctrl-C stops at
once, as usual.

SLURM's requeue signal (``SIGUSR1`` with ``SLURMEnvironment(auto_requeue=True)``) is left to Lightning, which saves
and requeues the job itself (README.md, "Checkpoints and resume").
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from rode_lightning.compat import accumulating_gradients


SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class GracefulInterrupt(Callback):
    """Stops ``fit`` at the next optimizer step after SIGINT or SIGTERM, with a checkpoint and the resume command
    (module docstring). ``received`` is the signal that stopped the run, ``checkpoint`` where it was saved."""

    def __init__(self) -> None:
        self.requested: signal.Signals | None = None
        self.received: signal.Signals | None = None
        self.checkpoint: Path | None = None
        self._previous: dict[signal.Signals, object] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._request_stop)

    def _request_stop(self, signum: int, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            self._restore()
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, as without this callback
        self.requested = signal.Signals(signum)
        print(f"\n{self.requested.name} received: stopping after the current optimizer step with a checkpoint "
              f"(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if accumulating_gradients(trainer):
            return  # inside an accumulation window: its gradients are in no checkpoint
        if not trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False):
            return
        requested = trainer.strategy.broadcast(self.requested)
        self.received = requested or signal.SIGTERM
        directory = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        self.checkpoint = directory / f"interrupted-step={trainer.global_step}.ckpt"
        trainer.save_checkpoint(self.checkpoint)  # every process: a sharded checkpoint needs them all
        trainer.should_stop = True
        rank_zero_info(f"interrupted by {self.received.name} at step {trainer.global_step}; checkpoint "
                       f"{self.checkpoint}\nresume with:\n  {resume_command(self.checkpoint, trainer)}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def resume_command(checkpoint: Path, trainer: L.Trainer) -> str:
    """This process's own ``fit`` command line with ``--ckpt_path`` set to ``checkpoint`` and the logger's version
    pinned, so that the resumed run writes into the same log directory (and its adapter where README says)."""
    arguments = list(sys.argv[1:]) if Path(sys.argv[0]).parent.name == "rode_lightning" else ["fit", "..."]
    cleaned, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
            continue
        if argument == "--ckpt_path":
            skip = True
            continue
        if argument.startswith("--ckpt_path="):
            continue
        cleaned.append(argument)
    cleaned += ["--ckpt_path", str(checkpoint)]
    version = getattr(trainer.logger, "version", None)
    if version is not None and not any(a.startswith("--trainer.logger.init_args.version") for a in cleaned):
        cleaned += ["--trainer.logger.init_args.version", str(version if isinstance(version, str) else
                                                                f"version_{version}")]
    return shlex.join(["python", "-m", "rode_lightning", *cleaned])
