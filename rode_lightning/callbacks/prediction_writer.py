"""Writes what ``predict`` answers as JSON lines, one object per request, while it runs.

Written batch by batch rather than collected: a long prediction run keeps its answers if it is interrupted, and
memory does not grow with the number of images. They go to ``<name>.partial`` beside the output, renamed into
place when the run ends, so the output file is complete or absent (an earlier complete one stays until then), and an
interrupted run's answers are in the ``.partial`` file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info


class JSONLPredictionWriter(BasePredictionWriter):
    """Args:
        output_path: the JSONL file to write; ``null`` for ``<log dir>/predictions.jsonl``. Under several
            processes each writes its own ``<name>.rank<k>.jsonl``.
    """

    def __init__(self, output_path: str | None = None):
        super().__init__(write_interval="batch")
        self.output_path = output_path
        self.path: Path | None = None
        self.partial: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank asks
        path = Path(self.output_path) if self.output_path else Path(log_dir or ".") / "predictions.jsonl"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.partial.write_text("")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        with open(self.partial, "a") as handle:
            for answer in prediction:
                handle.write(json.dumps(answer) + "\n")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        os.replace(self.partial, self.path)
        rank_zero_info(f"predictions written to {self.path}")
