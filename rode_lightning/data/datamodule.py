"""The LightningDataModule that serves food instruction data to every model in this project."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Literal

import lightning as L
import open_clip
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from rode_lightning.data.clusters import cluster_instructions
from rode_lightning.data.demo import generate_demo_unifood
from rode_lightning.data.instructions import InstructionCollator, InstructionDataset, Sample
from rode_lightning.data.prompts import TASKS, task_available
from rode_lightning.data.records import FoodRecord
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.data.unifood import SkipCounter, read_unifood_split
from rode_lightning.metrics.ingredients import most_frequent_baseline


def default_demo_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rode_lightning" / "demo_unifood"


class FoodDataModule(L.LightningDataModule):
    """Food instruction data: every available task of every dish becomes one (image, question, answer) sample.

    Args:
        unifood_root: a Uni-Food directory (see README.md); ``null`` generates the demo data into ``demo_dir``.
        demo_dir: where the demo data is generated; ``null`` for ``~/.cache/rode_lightning/demo_unifood``.
        demo_seed: seed of the demo data.
        demo_train_size: dishes in the demo training split.
        demo_eval_size: dishes in each of the demo validation and test splits.
        train_tasks: tasks trained on.
        eval_tasks: tasks of the validation and test splits.
        tokenizer: ``demo`` or a local tokenizer directory; set it on the model, the CLI copies it here.
        image_size: vision encoder input size; copied from ``model.vision`` by the CLI.
        num_image_tokens: ``<image>`` tokens per sample; copied from ``model.vision`` by the CLI.
        batch_size: training batch size per process.
        eval_batch_size: validation/test batch size per process.
        max_length: longest token sequence, image tokens included; longer answers are cut.
        num_workers: data-loading worker processes.
        seed: seed for the question phrasing choice.
        on_error: ``raise`` stops at the first bad record; ``skip`` leaves it out, counts it and reports it.
        num_clusters: instruction clusters for MoCLE routing; set from ``model.adapter`` by the CLI (``null`` unless
            the adapter method is ``cluster``).
        cluster_encoder: sentence encoder for the clustering: ``minilm`` (optional package), ``tfidf``, or ``auto``.
    """

    def __init__(
        self,
        unifood_root: str | None = None,
        demo_dir: str | None = None,
        demo_seed: int = 0,
        demo_train_size: int = 800,
        demo_eval_size: int = 64,
        train_tasks: list[str] = list(TASKS),
        eval_tasks: list[str] = list(TASKS),
        tokenizer: str = "demo",
        image_size: int = 64,
        num_image_tokens: int = 64,
        batch_size: int = 8,
        eval_batch_size: int = 16,
        max_length: int = 512,
        num_workers: int = 0,
        seed: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        num_clusters: int | None = None,
        cluster_encoder: Literal["auto", "minilm", "tfidf"] = "auto",
    ):
        super().__init__()
        for field, tasks in (("train_tasks", train_tasks), ("eval_tasks", eval_tasks)):
            unknown = [task for task in tasks if task not in TASKS]
            if unknown or not tasks:
                raise ValueError(f"data.{field}: {unknown or 'empty list'} - expected a non-empty subset of "
                                 f"{list(TASKS)}")
        self.save_hyperparameters()
        self.skipped = SkipCounter()
        self.datasets: dict[str, InstructionDataset] = {}
        self.records: dict[str, list[FoodRecord]] = {}
        self.ingredient_baseline: dict[str, float] | None = None
        self.cluster_centroids: torch.Tensor | None = None

    @property
    def tokenizer(self):
        return load_tokenizer(self.hparams.tokenizer)

    def prepare_data(self) -> None:
        if self.hparams.unifood_root is None:
            self._generate_demo()

    def _generate_demo(self) -> None:
        sizes = {"train": self.hparams.demo_train_size, "val": self.hparams.demo_eval_size,
                 "test": self.hparams.demo_eval_size}
        generate_demo_unifood(self.data_root, seed=self.hparams.demo_seed, splits=sizes)

    @property
    def data_root(self) -> Path:
        if self.hparams.unifood_root is not None:
            return Path(self.hparams.unifood_root)
        return Path(self.hparams.demo_dir) if self.hparams.demo_dir else default_demo_dir()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.hparams.unifood_root is None:
            # prepare_data runs on one process per node; generation is idempotent, so ensure it here as well.
            self._generate_demo()
        transform = open_clip.image_transform(self.hparams.image_size, is_train=False)
        for split, tasks in (("train", self.hparams.train_tasks), ("val", self.hparams.eval_tasks),
                             ("test", self.hparams.eval_tasks)):
            records = read_unifood_split(self.data_root, split, self.hparams.on_error, self.skipped)
            self.records[split] = records
            samples = [Sample(record, task) for record in records for task in tasks if task_available(record, task)]
            if not samples:
                raise ValueError(f"split {split!r} of {self.data_root} has no sample for tasks {tasks}")
            self.datasets[split] = InstructionDataset(samples, self.tokenizer, transform,
                                                      self.hparams.num_image_tokens, self.hparams.max_length,
                                                      self.hparams.seed)
        if self.hparams.num_clusters:
            self._assign_clusters()
        self.ingredient_baseline = most_frequent_baseline(
            [r.ingredient_names for r in self.records["train"] if r.ingredients],
            [r.ingredient_names for r in self.records["val"] if r.ingredients],
        )
        rank_zero_info(self.summary())

    def _assign_clusters(self) -> None:
        """k-means once over the instructions of all splits; every sample gets its cluster id (MoCLE)."""
        order = [(split, index) for split, dataset in self.datasets.items() for index in range(len(dataset))]
        texts = [self.datasets[split].question(index) for split, index in order]
        labels, centroids = cluster_instructions(texts, self.hparams.num_clusters, self.hparams.seed,
                                                 self.hparams.cluster_encoder)
        for (split, index), label in zip(order, labels.tolist()):
            dataset = self.datasets[split]
            dataset.samples[index] = replace(dataset.samples[index], cluster_id=label)
        self.cluster_centroids = torch.from_numpy(centroids)

    def summary(self) -> str:
        lines = [f"food data from {self.data_root}:"]
        for split, dataset in self.datasets.items():
            per_task: dict[str, int] = {}
            for sample in dataset.samples:
                key = f"{sample.record.dataset}/{sample.task}"
                per_task[key] = per_task.get(key, 0) + 1
            counts = ", ".join(f"{key} {count}" for key, count in sorted(per_task.items()))
            lines.append(f"  {split}: {len(dataset)} samples ({counts})")
        lines.append(f"  skipped: {self.skipped.report()}")
        if self.ingredient_baseline:
            lines.append(f"  most-frequent-ingredients baseline on val: dataset IoU "
                         f"{self.ingredient_baseline['dataset_iou']:.3f}, sample IoU "
                         f"{self.ingredient_baseline['sample_iou']:.3f}")
        return "\n".join(lines)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        batch_size = self.hparams.batch_size if split == "train" else self.hparams.eval_batch_size
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=shuffle,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0,
                          collate_fn=InstructionCollator(self.tokenizer.pad_token_id))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
