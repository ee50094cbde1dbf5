"""The LightningDataModule that serves food instruction data to every model in this project.

Why this module is over 400 lines: it is the one class Lightning drives on the data side, and its hooks share state
(the served sources, the records and datasets of each split, the floors, MoCLE's clusters, the predict requests); the
datasets, sources, prompts, clusters and splits already live in their own modules.
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path
from collections.abc import Callable
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from rode_lightning.batch import FoodBatch
from rode_lightning.data.clusters import InstructionClusters
from rode_lightning.data.conversation import Conversation
from rode_lightning.data.errors import MissingSplitError, SkipCounter
from rode_lightning.data.instructions import InstructionDataset, Sample
from rode_lightning.data.predict import PredictionDataset, drop_unreadable_images, read_prediction_requests
from rode_lightning.conventions import TASKS
from rode_lightning.data.options import ClusterOptions, PredictOptions, TaskSelection, as_options, check_tasks
from rode_lightning.data.prompts import task_available
from rode_lightning.data.records import FoodRecord, merge_ingredients
from rode_lightning.data.resumable import ResumableDataLoader
from rode_lightning.data.sources import DatasetSource, ServedDataset, as_source, resolve_sources
from rode_lightning.metrics.floors import label_floors
from rode_lightning.metrics.vocabulary import IngredientVocabulary
from rode_lightning.user_errors import MissingFileError, UserError

def default_demo_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rode_lightning" / "demo"


def with_vocabulary(record: FoodRecord, vocabulary: IngredientVocabulary) -> FoodRecord:
    """The record with its ingredients renamed to their clusters; names that meet in one cluster are merged (grams
    summed), heaviest first as before."""
    renamed = [(vocabulary.canonical(ingredient.name), ingredient.grams) for ingredient in record.ingredients]
    return replace(record, ingredients=merge_ingredients(renamed))


class FoodDataModule(L.LightningDataModule):
    """Food instruction data: every available task of every dish becomes one conversation (image, question, answer).

    The configured datasets are mixed into one training set. The loaders batch conversations with the model's
    conversation format (``conversation_format``, set by the model: the data side never sees a token); every
    :class:`~rode_lightning.batch.FoodBatch` carries each sample's dataset and task (``batch.datasets``,
    ``batch.tasks``) for per-task metrics and router statistics.

    Args:
        sources: the datasets to serve (``data.sources``: a list of :class:`~rode_lightning.data.sources.DatasetSource`,
            each a registered ``dataset`` with its ``root``, optional ``name``, ``weight``, ``task_weights``,
            ``tasks``, ``val_fraction`` and dataset ``options``). A source without ``root`` is the dataset's demo
            copy, generated into ``demo_dir``; demo and configured data are never mixed. ``null``: the demo copies
            of Uni-Food and Nutrition5k, and the log says so. Sampling: with no ``weight`` anywhere, every training
            sample once per epoch in shuffled order; with weights (LLaVA-MoLE's per-dataset lambda), each epoch
            draws as many samples as the training set holds, with replacement, in proportion to the weights.
        tasks: the tasks trained on (``tasks.train``) and validated and tested (``tasks.eval``); each dataset
            gives the ones its labels serve.
        batch_size: training batch size per process.
        eval_batch_size: validation/test/predict batch size per process.
        max_length: longest token sequence, image tokens included; longer answers are cut.
        num_workers: data-loading worker processes.
        seed: seed for the question phrasing choice and weighted sampling.
        on_error: ``raise`` stops at the first bad record; ``skip`` leaves it out, counts it and reports it.
        demo_dir: where demo data (and the demo base) is generated; ``null`` for ``~/.cache/rode_lightning/demo``.
        clusters: instruction clusters for MoCLE routing (``count`` set from ``model.adapter`` by the command line,
            ``encoder``, a ``saved`` clusterer).
        predict: ``predict``'s input: ``source`` (a folder of images or a JSON/JSONL file of requests, README.md)
            and ``tasks`` (asked about every image of a folder).
        ingredient_vocabulary: optional JSON file of ingredient clusters (``{"cheese": ["cheddar cheese", ...]}``,
            README.md): ingredient names of every dataset are mapped to their cluster's name, for training targets
            and for scoring alike.
    """

    def __init__(
        self,
        sources: list[DatasetSource] | None = None,
        tasks: TaskSelection = TaskSelection(),
        batch_size: int = 8,
        eval_batch_size: int = 16,
        max_length: int = 512,
        num_workers: int = 0,
        seed: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        demo_dir: str | None = None,
        clusters: ClusterOptions = ClusterOptions(),
        predict: PredictOptions = PredictOptions(),
        ingredient_vocabulary: str | None = None,
    ):
        super().__init__()
        # Groups given as mappings (a script's, a test's) are checked like the command line's.
        tasks = as_options(tasks, TaskSelection, "data.tasks")
        clusters = as_options(clusters, ClusterOptions, "data.clusters")
        predict = as_options(predict, PredictOptions, "data.predict")
        check_tasks("data.tasks.train", tasks.train)
        check_tasks("data.tasks.eval", tasks.eval)
        check_tasks("data.predict.tasks", predict.tasks, TASKS)  # asked of a photo: the food tasks
        self.tasks, self.cluster_options, self.predict_options = tasks, clusters, predict
        # Plain values in the hyperparameters: checkpoints keep them, and Lightning reads them back with
        # ``torch.load(weights_only=True)``, which refuses classes of ours.
        self.save_hyperparameters()
        self.hparams.update(sources=None if sources is None else [
            asdict(as_source(source, f"data.sources[{index}]")) for index, source in enumerate(sources)],
            tasks=asdict(tasks), clusters=asdict(clusters), predict=asdict(predict))
        # Which datasets are served, from where: decided now, so that a configuration mistake stops the run before
        # anything is built.
        self.sources: dict[str, ServedDataset] = resolve_sources(sources, self.demo_dir)
        self.skipped = SkipCounter()
        self.datasets: dict[str, InstructionDataset] = {}
        self.records: dict[str, list[FoodRecord]] = {}
        self.missing_splits: dict[str, list[str]] = {}  # split -> why a served dataset has none
        self.ingredient_baselines: dict[str, dict[str, float]] = {}
        self.nutrition_baselines: dict[str, dict[str, float]] = {}
        self.floors: dict[str, dict[str, dict[str, float]]] = {}
        self.cluster_centroids: torch.Tensor | None = None
        self._clusters: InstructionClusters | None = None  # the fitted k-means, for predict requests
        self.predict_dataset: PredictionDataset | None = None
        # How conversations become batches: the model's (``FoodLMMModule.setup`` sets it), the loaders' collate.
        self.conversation_format: Callable[[list[Conversation]], FoodBatch] | None = None
        # Read now: a bad vocabulary file should stop the run before anything is built.
        self.ingredient_vocabulary = (IngredientVocabulary.from_file(ingredient_vocabulary)
                                      if ingredient_vocabulary else None)

    @property
    def demo_dir(self) -> Path:
        return Path(self.hparams.demo_dir) if self.hparams.demo_dir else default_demo_dir()

    @property
    def served(self) -> list[str]:
        """The names of the datasets served, in configuration order."""
        return list(self.sources)

    def root(self, dataset: str) -> Path:
        """Where ``dataset`` is read from: the configured root, or its demo copy."""
        return self.sources[dataset].root

    def prepare_data(self) -> None:
        # Answering predict requests needs no training data, unless MoCLE must cluster it (no saved clusterer);
        # setup generates the demo copies itself whenever it reads them.
        predict_only = self.predict_options.source is not None and (not self.cluster_options.count
                                                                    or self.cluster_options.saved)
        if not predict_only:
            self._generate_demo()

    def _generate_demo(self) -> None:
        """Writes the demo copy of every served demo dataset (idempotent: each generator checks its marker)."""
        for source in self.sources.values():
            if source.demo:
                source.write_demo()

    def _read(self, dataset: str, split: str) -> list[FoodRecord]:
        records = self.sources[dataset].read(split, self.hparams.on_error, self.skipped)
        if self.ingredient_vocabulary is not None:
            records = [with_vocabulary(record, self.ingredient_vocabulary) for record in records]
        return records

    @property
    def evaluation_pairs(self) -> dict[str, list[str]]:
        """The tasks scored per served dataset: those its labels can serve among ``eval_tasks`` (fixed before any
        sample is read, so every DDP process builds the same metrics)."""
        return {name: [task for task in source.tasks if task in self.tasks.eval]
                for name, source in self.sources.items()}

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_options.source is not None and self._setup_predict_only():
            return
        if self.datasets:
            if self.predict_dataset is not None and self.predict_dataset.cluster_ids is None and self._clusters:
                self._place_predict_requests()  # predict after fit in one process: the clusters exist already
            self._check_split_for(stage)
            return
        # prepare_data runs on one process per node; generation is idempotent, so ensure it here as well.
        self._generate_demo()
        for split, tasks in (("train", self.tasks.train), ("val", self.tasks.eval),
                             ("test", self.tasks.eval)):
            samples = self._samples(split, tasks)
            if split != "train":
                # Batches of one task generate together and stop together: short answers do not wait for recipes.
                samples.sort(key=lambda sample: (sample.record.dataset, sample.task))
            if not samples and split not in self.missing_splits:
                raise UserError(f"split {split!r} of {', '.join(self.served)} has no sample for tasks {tasks}")
            if samples:
                self.datasets[split] = InstructionDataset(samples, self.hparams.seed)
        self.records.setdefault("val", [])
        self.records.setdefault("test", [])
        if self.cluster_options.count:
            self._assign_clusters()
        self._compute_floors()
        rank_zero_info(self.summary())
        self._check_split_for(stage)

    def _setup_predict_only(self) -> bool:
        """Reads ``predict``'s requests; True when nothing else is needed (no clusters, or a saved clusterer)."""
        self._setup_predict()
        if not self.cluster_options.count:
            return True
        saved = self.cluster_options.saved
        if saved and self._clusters is None:
            # The adapter's own clusterer: no training data is read (issue 26).
            self._clusters = InstructionClusters.load(saved)
            if self._clusters is None:
                raise MissingFileError(f"data.clusters.saved: {saved} holds no instruction clusterer "
                                       "(instruction_clusters.json)")
        if self._clusters is not None and self.predict_dataset.cluster_ids is None and not self.datasets:
            self._place_predict_requests()
            return True
        return False

    def _samples(self, split: str, tasks: list[str]) -> list[Sample]:
        """Every (record, task) pair of ``split`` over the served datasets; a dataset without the split is noted
        (``missing_splits``) unless it is ``train``."""
        samples = []
        for dataset, source in self.sources.items():
            try:
                records = self._read(dataset, split)
            except MissingSplitError as missing:
                if split == "train":
                    raise
                self.missing_splits.setdefault(split, []).append(str(missing))
                rank_zero_info(f"{dataset}: no {split} split ({missing})")
                continue
            self.records.setdefault(split, []).extend(records)
            samples += [Sample(record, task) for record in records for task in tasks
                        if task in source.tasks and task_available(record, task)]
        return samples

    def _check_split_for(self, stage: str | None) -> None:
        """Refuse a stage whose split no served dataset has, naming what to add."""
        stage = str(getattr(stage, "value", stage) or "")  # Lightning passes its TrainerFn enum
        split = {"fit": "val", "validate": "val", "test": "test"}.get(stage)
        if split and split not in self.datasets:
            reasons = "; ".join(self.missing_splits.get(split, [])) or f"no {split} samples"
            raise UserError(f"{stage} needs a {split} split, and no served dataset has one: {reasons}")

    def _compute_floors(self) -> None:
        """The label-only floors of the validation and test splits (``floors[split][dataset]``,
        ``metrics/floors.py``)."""
        for split in ("val", "test"):
            for dataset in self.served:
                train = [r for r in self.records["train"] if r.dataset == dataset]
                held = [r for r in self.records[split] if r.dataset == dataset]
                result = label_floors([r.ingredient_names for r in train if r.ingredients],
                                      [r.ingredient_names for r in held if r.ingredients],
                                      [r.nutrition for r in train if r.nutrition],
                                      [r.nutrition for r in held if r.nutrition])
                if split == "val" and result.ingredients is not None:
                    self.ingredient_baselines[dataset] = result.ingredients
                if split == "val" and result.nutrition is not None:
                    self.nutrition_baselines[dataset] = result.nutrition
                if result.floors:
                    self.floors.setdefault(split, {})[dataset] = result.floors

    def _setup_predict(self) -> None:
        if self.predict_dataset is not None:
            return
        requests = read_prediction_requests(self.predict_options.source, self.predict_options.tasks)
        skipped = SkipCounter()
        kept = drop_unreadable_images(requests, skipped)
        if skipped:
            rank_zero_warn(f"predict: skipped {sum(skipped.values())} request(s): {skipped.report()}")
        if not kept:
            raise UserError(f"data.predict.source: none of the {len(requests)} requests in "
                            f"{self.predict_options.source} has a readable image")
        self.skipped.update(skipped)
        self.predict_dataset = PredictionDataset(kept)
        rank_zero_info(f"predict: {len(kept)} request(s) from {self.predict_options.source}")

    def _assign_clusters(self) -> None:
        """k-means once over the instructions of all splits; every sample gets its cluster id (MoCLE). Questions
        asked at ``predict`` are placed in the nearest of these clusters."""
        order = [(split, index) for split, dataset in self.datasets.items() for index in range(len(dataset))]
        texts = [self.datasets[split].question(index) for split, index in order]
        clusters = InstructionClusters(self.cluster_options.count, self.hparams.seed, self.cluster_options.encoder)
        labels = clusters.fit(texts)
        for (split, index), label in zip(order, labels.tolist()):
            dataset = self.datasets[split]
            dataset.samples[index] = replace(dataset.samples[index], cluster_id=label)
        self.cluster_centroids = torch.from_numpy(clusters.centroids)
        self._clusters = clusters
        if self.predict_dataset is not None:
            self._place_predict_requests()

    @property
    def instruction_clusters(self) -> InstructionClusters | None:
        """The fitted instruction clusterer (MoCLE), saved with the adapter at the end of ``fit``."""
        return self._clusters

    def _place_predict_requests(self) -> None:
        questions = [request.question for request in self.predict_dataset.requests]
        self.predict_dataset.cluster_ids = self._clusters.assign(questions).tolist()

    def summary(self) -> str:
        lines = ["food data:"]
        for dataset, source in self.sources.items():
            lines.append(f"  {dataset} from {source.root}" + (" (demo copy, generated)" if source.demo else ""))
        for split, dataset in self.datasets.items():
            per_task: dict[str, int] = {}
            for sample in dataset.samples:
                key = f"{sample.record.dataset}/{sample.task}"
                per_task[key] = per_task.get(key, 0) + 1
            counts = ", ".join(f"{key} {count}" for key, count in sorted(per_task.items()))
            lines.append(f"  {split}: {len(dataset)} samples ({counts})")
        if self.weighted:
            weights = {name: (source.source.weight, source.source.task_weights) for name, source in self.sources.items()}
            lines.append("  training sampling weights: " + ", ".join(
                f"{name} {1.0 if weight is None else weight}" + (f" {tasks}" if tasks else "")
                for name, (weight, tasks) in weights.items()))
        lines.append(f"  skipped: {self.skipped.report()}")
        for dataset, baseline in self.ingredient_baselines.items():
            lines.append(f"  most-frequent-ingredients baseline on {dataset} val: dataset IoU "
                         f"{baseline['dataset_iou']:.3f}, sample IoU {baseline['sample_iou']:.3f}")
        for dataset, baseline in self.nutrition_baselines.items():
            lines.append(f"  training-mean nutrition baseline on {dataset} val: pMAE average {baseline['average']:.1f}")
        return "\n".join(lines)

    @property
    def weighted(self) -> bool:
        """Whether training samples are drawn by weight: some source sets a ``weight`` or ``task_weights``."""
        return any(entry.source.weight is not None or entry.source.task_weights for entry in self.sources.values())

    def sample_weights(self) -> torch.Tensor:
        """The training sampling weight of every training sample (its source's ``task_weights`` or ``weight``)."""
        samples = self.datasets["train"].samples
        values = [self.sources[sample.record.dataset].weight(sample.task) for sample in samples]
        if not any(values):
            raise UserError("data.sources: every training sample has weight 0")
        return torch.tensor(values, dtype=torch.double)

    def _loader(self, split: str) -> DataLoader:
        batch_size = self.hparams.batch_size if split == "train" else self.hparams.eval_batch_size
        collate_fn = self._collate()
        workers = {"num_workers": self.hparams.num_workers, "persistent_workers": self.hparams.num_workers > 0}
        if split == "train":
            # Each epoch's order follows from data.seed (drawn by sampling_weights, if given), and checkpoints record
            # how far the epoch got, so a resumed run trains on the rest of it (data/resumable.py). The sampler is a
            # DistributedSampler: under DDP Lightning keeps it, and each process draws its own share.
            weights = self.sample_weights() if self.weighted else None
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
            raise UserError("predict needs data.predict.source: a folder of images or a JSON/JSONL file of requests")
        return DataLoader(self.predict_dataset, batch_size=self.hparams.eval_batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers, collate_fn=self._collate())

    def _collate(self) -> Callable[[list[Conversation]], FoodBatch]:
        """The model's conversation format, bounded by ``max_length``."""
        if self.conversation_format is None:
            raise RuntimeError("FoodDataModule.conversation_format is not set: the model sets it when a Trainer runs "
                               "them together; a script that uses the data module alone sets it itself (e.g. "
                               "rode_lightning.model.formats.LlavaFormat)")
        self.conversation_format.max_length = self.hparams.max_length
        return self.conversation_format
