"""The LightningDataModule that serves food instruction data to every model in this project."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Literal

import lightning as L
import open_clip
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from rode_lightning.data.clusters import InstructionClusters
from rode_lightning.data.demo import generate_demo_unifood
from rode_lightning.data.demo_nutrition5k import generate_demo_nutrition5k
from rode_lightning.data.errors import SkipCounter
from rode_lightning.data.instructions import InstructionCollator, InstructionDataset, Sample
from rode_lightning.data.nutrition5k import read_nutrition5k_split
from rode_lightning.data.predict import (PredictionCollator, PredictionDataset, drop_unreadable_images,
                                         read_prediction_requests)
from rode_lightning.data.prompts import TASKS, task_available
from rode_lightning.data.records import FoodRecord, merge_ingredients
from rode_lightning.data.resumable import ResumableDataLoader
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.data.unifood import read_unifood_split
from rode_lightning.metrics.ingredients import most_frequent_baseline
from rode_lightning.metrics.nutrition import train_mean_baseline
from rode_lightning.metrics.vocabulary import IngredientVocabulary

DATASETS: tuple[str, ...] = ("unifood", "nutrition5k")


def default_demo_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rode_lightning" / "demo"


def with_vocabulary(record: FoodRecord, vocabulary: IngredientVocabulary) -> FoodRecord:
    """The record with its ingredients renamed to their clusters; names that meet in one cluster are merged (grams
    summed), heaviest first as before."""
    renamed = [(vocabulary.canonical(ingredient.name), ingredient.grams) for ingredient in record.ingredients]
    return replace(record, ingredients=merge_ingredients(renamed))


class FoodDataModule(L.LightningDataModule):
    """Food instruction data: every available task of every dish becomes one (image, question, answer) sample.

    Uni-Food and Nutrition5k are mixed into one training set; every batch carries each sample's dataset and task
    (``batch["datasets"]``, ``batch["tasks"]``) for per-task metrics and router statistics.

    Args:
        datasets: which datasets to serve, any of ``unifood``, ``nutrition5k``.
        unifood_root: a Uni-Food directory (see README.md); ``null`` generates the demo dishes into ``demo_dir``.
        nutrition5k_root: a Nutrition5k release directory (``metadata/``, ``dish_ids/``, ``imagery/``); ``null``
            generates a small demo copy in that layout into ``demo_dir``.
        nutrition5k_val_fraction: Nutrition5k has no validation split: this fraction of its training dishes
            (chosen by a hash of the dish id, so stable) is held out as ``val``.
        demo_dir: where demo data is generated; ``null`` for ``~/.cache/rode_lightning/demo``.
        demo_seed: seed of the demo data.
        demo_train_size: dishes in the demo Uni-Food training split.
        demo_eval_size: dishes in each of the demo Uni-Food validation and test splits.
        demo_nutrition5k_size: dishes in the demo Nutrition5k copy (train and test lists together).
        train_tasks: tasks trained on (each dataset gives the ones it has).
        eval_tasks: tasks of the validation and test splits.
        sampling_weights: relative sampling weight per dataset (``unifood``) or per dataset and task
            (``unifood/recipe``; more specific wins), LLaVA-MoLE's per-dataset lambda. ``null``: every training
            sample once per epoch in shuffled order. With weights, each epoch draws as many samples as the training
            set holds, with replacement.
        tokenizer: ``demo`` or a local tokenizer directory; set it on the model, the CLI copies it here.
        image_size: vision encoder input size; copied from ``model.vision`` by the CLI.
        num_image_tokens: ``<image>`` tokens per sample; copied from ``model.vision`` by the CLI.
        batch_size: training batch size per process.
        eval_batch_size: validation/test/predict batch size per process.
        max_length: longest token sequence, image tokens included; longer answers are cut.
        num_workers: data-loading worker processes.
        seed: seed for the question phrasing choice and weighted sampling.
        on_error: ``raise`` stops at the first bad record; ``skip`` leaves it out, counts it and reports it.
        num_clusters: instruction clusters for MoCLE routing; set from ``model.adapter`` by the CLI (``null`` unless
            the adapter method is ``cluster``).
        cluster_encoder: sentence encoder for the clustering: ``minilm`` (optional package), ``tfidf``, or ``auto``.
        predict_source: for ``predict``: a folder of images or a JSON/JSONL file of ``{"image", "task" or
            "question"}`` requests (README.md).
        predict_tasks: for a folder of images, the tasks asked about every image.
        ingredient_vocabulary: optional JSON file of ingredient clusters (``{"cheese": ["cheddar cheese", ...]}``,
            README.md): ingredient names of every dataset are mapped to their cluster's name, for training targets
            and for scoring alike.
    """

    def __init__(
        self,
        datasets: list[Literal["unifood", "nutrition5k"]] = list(DATASETS),
        unifood_root: str | None = None,
        nutrition5k_root: str | None = None,
        nutrition5k_val_fraction: float = 0.1,
        demo_dir: str | None = None,
        demo_seed: int = 0,
        demo_train_size: int = 800,
        demo_eval_size: int = 64,
        demo_nutrition5k_size: int = 160,
        train_tasks: list[str] = list(TASKS),
        eval_tasks: list[str] = list(TASKS),
        sampling_weights: dict[str, float] | None = None,
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
        predict_source: str | None = None,
        predict_tasks: list[str] = list(TASKS),
        ingredient_vocabulary: str | None = None,
    ):
        super().__init__()
        for field, tasks in (("train_tasks", train_tasks), ("eval_tasks", eval_tasks),
                             ("predict_tasks", predict_tasks)):
            unknown = [task for task in tasks if task not in TASKS]
            if unknown or not tasks:
                raise ValueError(f"data.{field}: {unknown or 'empty list'} - expected a non-empty subset of "
                                 f"{list(TASKS)}")
        unknown = [name for name in datasets if name not in DATASETS]
        if unknown or not datasets:
            raise ValueError(f"data.datasets: {unknown or 'empty list'} - expected a non-empty subset of "
                             f"{list(DATASETS)}")
        for key, weight in (sampling_weights or {}).items():
            dataset, _, task = key.partition("/")
            if dataset not in datasets or (task and task not in TASKS):
                raise ValueError(f"data.sampling_weights: unknown key {key!r}; expected a dataset of data.datasets "
                                 f"({', '.join(datasets)}) or '<dataset>/<task>' with a task of {', '.join(TASKS)}")
            if not weight >= 0:
                raise ValueError(f"data.sampling_weights: {key!r} has weight {weight!r}; expected a number >= 0")
        if not 0 < nutrition5k_val_fraction < 1:
            raise ValueError(f"data.nutrition5k_val_fraction: {nutrition5k_val_fraction} is not in (0, 1)")
        self.save_hyperparameters()
        self.skipped = SkipCounter()
        self.datasets: dict[str, InstructionDataset] = {}
        self.records: dict[str, list[FoodRecord]] = {}
        self.ingredient_baselines: dict[str, dict[str, float]] = {}
        self.nutrition_baselines: dict[str, dict[str, float]] = {}
        self.floors: dict[str, dict[str, dict[str, float]]] = {}
        self.cluster_centroids: torch.Tensor | None = None
        self.predict_dataset: PredictionDataset | None = None
        # Read now: a bad vocabulary file should stop the run before anything is built.
        self.ingredient_vocabulary = (IngredientVocabulary.from_file(ingredient_vocabulary)
                                      if ingredient_vocabulary else None)

    @property
    def tokenizer(self):
        return load_tokenizer(self.hparams.tokenizer)

    @property
    def demo_dir(self) -> Path:
        return Path(self.hparams.demo_dir) if self.hparams.demo_dir else default_demo_dir()

    def root(self, dataset: str) -> Path:
        """Where ``dataset`` is read from: the configured root, or its demo copy."""
        configured = self.hparams.unifood_root if dataset == "unifood" else self.hparams.nutrition5k_root
        return Path(configured) if configured is not None else self.demo_dir / dataset

    def prepare_data(self) -> None:
        self._generate_demo()

    def _generate_demo(self) -> None:
        """Generates the demo copy of every served dataset that has no configured root (idempotent)."""
        if "unifood" in self.hparams.datasets and self.hparams.unifood_root is None:
            sizes = {"train": self.hparams.demo_train_size, "val": self.hparams.demo_eval_size,
                     "test": self.hparams.demo_eval_size}
            generate_demo_unifood(self.root("unifood"), seed=self.hparams.demo_seed, splits=sizes)
        if "nutrition5k" in self.hparams.datasets and self.hparams.nutrition5k_root is None:
            total = self.hparams.demo_nutrition5k_size
            sizes = {"train": total - total // 5, "test": total // 5}
            generate_demo_nutrition5k(self.root("nutrition5k"), seed=self.hparams.demo_seed, sizes=sizes)

    def _read(self, dataset: str, split: str) -> list[FoodRecord]:
        if dataset == "unifood":
            records = read_unifood_split(self.root(dataset), split, self.hparams.on_error, self.skipped)
        else:
            records = read_nutrition5k_split(self.root(dataset), split, self.hparams.on_error, self.skipped,
                                             val_fraction=self.hparams.nutrition5k_val_fraction)
        if self.ingredient_vocabulary is not None:
            records = [with_vocabulary(record, self.ingredient_vocabulary) for record in records]
        return records

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.hparams.predict_source is not None:
            self._setup_predict()
            if not self.hparams.num_clusters:
                return
        if self.datasets:
            return
        # prepare_data runs on one process per node; generation is idempotent, so ensure it here as well.
        self._generate_demo()
        transform = self.image_transform
        for split, tasks in (("train", self.hparams.train_tasks), ("val", self.hparams.eval_tasks),
                             ("test", self.hparams.eval_tasks)):
            samples = []
            for dataset in self.hparams.datasets:
                records = self._read(dataset, split)
                self.records.setdefault(split, []).extend(records)
                samples += [Sample(record, task) for record in records for task in tasks
                            if task_available(record, task)]
            if split != "train":
                # Batches of one task generate together and stop together: short answers do not wait for recipes.
                samples.sort(key=lambda sample: (sample.record.dataset, sample.task))
            if not samples:
                raise ValueError(f"split {split!r} of {', '.join(self.hparams.datasets)} has no sample for tasks "
                                 f"{tasks}")
            self.datasets[split] = InstructionDataset(samples, self.tokenizer, transform,
                                                      self.hparams.num_image_tokens, self.hparams.max_length,
                                                      self.hparams.seed)
        if self.hparams.num_clusters:
            self._assign_clusters()
        self._compute_floors()
        rank_zero_info(self.summary())

    def _compute_floors(self) -> None:
        """The label-only floors of the validation and test splits (``floors[split][dataset]``)."""
        for split in ("val", "test"):
            for dataset in self.hparams.datasets:
                floors = {}
                train = [r.ingredient_names for r in self.records["train"] if r.dataset == dataset and r.ingredients]
                held = [r.ingredient_names for r in self.records[split] if r.dataset == dataset and r.ingredients]
                if train and held:
                    baseline = most_frequent_baseline(train, held)
                    floors["ingredient_iou_most_frequent"] = baseline["dataset_iou"]
                    if split == "val":
                        self.ingredient_baselines[dataset] = baseline
                train = [r.nutrition for r in self.records["train"] if r.dataset == dataset and r.nutrition]
                held = [r.nutrition for r in self.records[split] if r.dataset == dataset and r.nutrition]
                if train and held:
                    baseline = train_mean_baseline(train, held)
                    floors["pmae_average_train_mean"] = baseline["average"]
                    if split == "val":
                        self.nutrition_baselines[dataset] = baseline
                if floors:
                    self.floors.setdefault(split, {})[dataset] = floors

    @property
    def image_transform(self):
        """open_clip's own evaluation preprocessing for the configured input size (resize, centre crop, CLIP
        normalisation), so pixels reach the encoder exactly as in its pre-training."""
        return open_clip.image_transform(self.hparams.image_size, is_train=False)

    def _setup_predict(self) -> None:
        if self.predict_dataset is not None:
            return
        requests = read_prediction_requests(self.hparams.predict_source, self.hparams.predict_tasks)
        skipped = SkipCounter()
        kept = drop_unreadable_images(requests, skipped)
        if skipped:
            rank_zero_warn(f"predict: skipped {sum(skipped.values())} request(s): {skipped.report()}")
        if not kept:
            raise ValueError(f"data.predict_source: none of the {len(requests)} requests in "
                             f"{self.hparams.predict_source} has a readable image")
        self.skipped.update(skipped)
        self.predict_dataset = PredictionDataset(kept, self.tokenizer, self.image_transform,
                                                 self.hparams.num_image_tokens)
        rank_zero_info(f"predict: {len(kept)} request(s) from {self.hparams.predict_source}")

    def _assign_clusters(self) -> None:
        """k-means once over the instructions of all splits; every sample gets its cluster id (MoCLE). Questions
        asked at ``predict`` are placed in the nearest of these clusters."""
        order = [(split, index) for split, dataset in self.datasets.items() for index in range(len(dataset))]
        texts = [self.datasets[split].question(index) for split, index in order]
        clusters = InstructionClusters(self.hparams.num_clusters, self.hparams.seed, self.hparams.cluster_encoder)
        labels = clusters.fit(texts)
        for (split, index), label in zip(order, labels.tolist()):
            dataset = self.datasets[split]
            dataset.samples[index] = replace(dataset.samples[index], cluster_id=label)
        self.cluster_centroids = torch.from_numpy(clusters.centroids)
        if self.predict_dataset is not None:
            questions = [request.question for request in self.predict_dataset.requests]
            self.predict_dataset.cluster_ids = clusters.assign(questions).tolist()

    def summary(self) -> str:
        lines = ["food data:"]
        for dataset in self.hparams.datasets:
            lines.append(f"  {dataset} from {self.root(dataset)}")
        for split, dataset in self.datasets.items():
            per_task: dict[str, int] = {}
            for sample in dataset.samples:
                key = f"{sample.record.dataset}/{sample.task}"
                per_task[key] = per_task.get(key, 0) + 1
            counts = ", ".join(f"{key} {count}" for key, count in sorted(per_task.items()))
            lines.append(f"  {split}: {len(dataset)} samples ({counts})")
        if self.hparams.sampling_weights:
            lines.append(f"  training sampling weights: {self.hparams.sampling_weights}")
        lines.append(f"  skipped: {self.skipped.report()}")
        for dataset, baseline in self.ingredient_baselines.items():
            lines.append(f"  most-frequent-ingredients baseline on {dataset} val: dataset IoU "
                         f"{baseline['dataset_iou']:.3f}, sample IoU {baseline['sample_iou']:.3f}")
        for dataset, baseline in self.nutrition_baselines.items():
            lines.append(f"  training-mean nutrition baseline on {dataset} val: pMAE average {baseline['average']:.1f}")
        return "\n".join(lines)

    def sample_weights(self) -> torch.Tensor:
        """The training sampling weight of every training sample (see ``sampling_weights``)."""
        weights = self.hparams.sampling_weights or {}
        samples = self.datasets["train"].samples
        values = [weights.get(f"{s.record.dataset}/{s.task}", weights.get(s.record.dataset, 1.0)) for s in samples]
        if not any(values):
            raise ValueError("data.sampling_weights: every training sample has weight 0")
        return torch.tensor(values, dtype=torch.double)

    def _loader(self, split: str) -> DataLoader:
        batch_size = self.hparams.batch_size if split == "train" else self.hparams.eval_batch_size
        collate_fn = InstructionCollator(self.tokenizer.pad_token_id)
        workers = {"num_workers": self.hparams.num_workers, "persistent_workers": self.hparams.num_workers > 0}
        if split == "train":
            # Each epoch's order follows from data.seed (drawn by sampling_weights, if given), and checkpoints record
            # how far the epoch got, so a resumed run trains on the rest of it (data/resumable.py). The sampler is a
            # DistributedSampler: under DDP Lightning keeps it, and each process draws its own share.
            weights = self.sample_weights() if self.hparams.sampling_weights else None
            return ResumableDataLoader(self.datasets[split], batch_size=batch_size, seed=self.hparams.seed,
                                       weights=weights, collate_fn=collate_fn, **workers)
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=False, collate_fn=collate_fn,
                          **workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dataset is None:
            raise ValueError("predict needs data.predict_source: a folder of images or a JSON/JSONL file of requests")
        return DataLoader(self.predict_dataset, batch_size=self.hparams.eval_batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers,
                          collate_fn=PredictionCollator(self.tokenizer.pad_token_id))
