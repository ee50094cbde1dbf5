"""The LightningDataModule that serves food instruction data to every model in this project.

Why this module is over 400 lines: it is the one class Lightning drives on the data side, and its hooks share state
(the served sources, the records and datasets of each split, the floors, MoCLE's clusters, the predict requests); the
readers, prompts, clusters and splits already live in their own modules, and the open issue on datasets as plug-ins
takes the sources out of it.
"""

from __future__ import annotations

import os
from dataclasses import replace
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
from rode_lightning.data.datasets.huggingface.reader import HuggingFaceSource
from rode_lightning.data.instructions import InstructionDataset, Sample
from rode_lightning.data.predict import PredictionDataset, drop_unreadable_images, read_prediction_requests
from rode_lightning.conventions import TASKS
from rode_lightning.data.prompts import task_available
from rode_lightning.data.records import FoodRecord, merge_ingredients
from rode_lightning.data.resumable import ResumableDataLoader
from rode_lightning.data.sources import ServedDataset, resolve_served_datasets
from rode_lightning.data.splits import DEFAULT_VAL_FRACTION
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
        datasets: which datasets to serve, by name (``unifood``, ``nutrition5k``, ``recipe1m``, ``food101``,
            ``vireo172``, or the ``name`` of a ``huggingface`` block). ``null``: every dataset whose root is set.
            When no root and no ``huggingface`` block is set at all, the demo copies of the listed datasets (by
            default Uni-Food and Nutrition5k) are generated into ``demo_dir`` and served, and the log says so.
            Demo and configured data are never mixed: a listed dataset without its root is refused then.
        unifood_root: a Uni-Food directory (README.md, "Data formats").
        nutrition5k_root: a Nutrition5k release directory (``metadata/``, ``dish_ids/``, ``imagery/``).
        recipe1m_root: a Recipe1M directory (``layer1.json``, ``layer2.json``, ``det_ingrs.json``, ``images/``,
            optionally Recipe1M+'s ``recipes_with_nutritional_info.json``).
        food101_root: a Food-101 directory (``images/``, ``meta/``).
        vireo172_root: a VIREO Food-172 directory (``ready_chinese_food/``, ``SplitAndIngreLabel/``).
        huggingface: local Hugging Face datasets (folders written by ``save_to_disk``, or parquet files), each with
            its column mapping (README.md).
        val_fraction: for a dataset without a validation split of its own (Nutrition5k, Food-101, a Uni-Food
            folder without ``val.jsonl``, a Hugging Face dataset without one), this share of its training items,
            chosen by a hash of the item's id (stable), is held out as ``val``.
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
        tokenizer: deprecated and ignored: the model's conversation format tokenizes (set ``model.tokenizer``).
        image_size: deprecated and ignored: the model's conversation format prepares the pixels.
        num_image_tokens: deprecated and ignored: the model's conversation format spells the image tokens.
        batch_size: training batch size per process.
        eval_batch_size: validation/test/predict batch size per process.
        max_length: longest token sequence, image tokens included; longer answers are cut.
        num_workers: data-loading worker processes.
        seed: seed for the question phrasing choice and weighted sampling.
        on_error: ``raise`` stops at the first bad record; ``skip`` leaves it out, counts it and reports it.
        num_clusters: instruction clusters for MoCLE routing; set from ``model.adapter`` by the CLI (``null`` unless
            the adapter method is ``cluster``).
        cluster_encoder: sentence encoder for the clustering: ``minilm`` (optional package), ``tfidf``, or ``auto``.
        instruction_clusters: a directory holding a saved instruction clusterer (a cluster adapter's, written at the
            end of ``fit``): ``predict`` places its questions with it instead of clustering the training data again.
            The CLI sets it from ``model.adapter_path`` when that adapter has one.
        predict_source: for ``predict``: a folder of images or a JSON/JSONL file of ``{"image", "task" or
            "question"}`` requests (README.md).
        predict_tasks: for a folder of images, the tasks asked about every image.
        ingredient_vocabulary: optional JSON file of ingredient clusters (``{"cheese": ["cheddar cheese", ...]}``,
            README.md): ingredient names of every dataset are mapped to their cluster's name, for training targets
            and for scoring alike.
    """

    def __init__(
        self,
        datasets: list[str] | None = None,
        unifood_root: str | None = None,
        nutrition5k_root: str | None = None,
        recipe1m_root: str | None = None,
        food101_root: str | None = None,
        vireo172_root: str | None = None,
        huggingface: list[HuggingFaceSource] | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        demo_dir: str | None = None,
        demo_seed: int = 0,
        demo_train_size: int = 800,
        demo_eval_size: int = 64,
        demo_nutrition5k_size: int = 160,
        train_tasks: list[str] = list(TASKS),
        eval_tasks: list[str] = list(TASKS),
        sampling_weights: dict[str, float] | None = None,
        tokenizer: str | None = None,
        image_size: int | None = None,
        num_image_tokens: int | None = None,
        batch_size: int = 8,
        eval_batch_size: int = 16,
        max_length: int = 512,
        num_workers: int = 0,
        seed: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        num_clusters: int | None = None,
        cluster_encoder: Literal["auto", "minilm", "tfidf"] = "auto",
        instruction_clusters: str | None = None,
        predict_source: str | None = None,
        predict_tasks: list[str] = list(TASKS),
        ingredient_vocabulary: str | None = None,
    ):
        super().__init__()
        for field, tasks in (("train_tasks", train_tasks), ("eval_tasks", eval_tasks),
                             ("predict_tasks", predict_tasks)):
            unknown = [task for task in tasks if task not in TASKS]
            if unknown or not tasks:
                raise UserError(f"data.{field}: {unknown or 'empty list'} - expected a non-empty subset of "
                                f"{list(TASKS)}")
        if not 0 < val_fraction < 1:
            raise UserError(f"data.val_fraction: {val_fraction} is not in (0, 1)")
        _warn_about_deprecated_keys(tokenizer=tokenizer, image_size=image_size, num_image_tokens=num_image_tokens)
        # Not kept: Lightning merges the model's and the data's hyperparameters for the logger and refuses a key
        # (``tokenizer``) that both have with different values.
        self.save_hyperparameters(ignore=["tokenizer", "image_size", "num_image_tokens"])
        # Which datasets are served, from where: decided now, so that a configuration mistake stops the run before
        # anything is built.
        roots = {"unifood": unifood_root, "nutrition5k": nutrition5k_root, "recipe1m": recipe1m_root,
                 "food101": food101_root, "vireo172": vireo172_root}
        self.sources: dict[str, ServedDataset] = resolve_served_datasets(datasets, roots, huggingface or [],
                                                                         self.demo_dir)
        served = list(self.sources)
        for key, weight in (sampling_weights or {}).items():
            dataset, _, task = key.partition("/")
            if dataset not in served or (task and task not in TASKS):
                raise UserError(f"data.sampling_weights: unknown key {key!r}; expected a served dataset "
                                f"({', '.join(served)}) or '<dataset>/<task>' with a task of {', '.join(TASKS)}")
            if not weight >= 0:
                raise UserError(f"data.sampling_weights: {key!r} has weight {weight!r}; expected a number >= 0")
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
        predict_only = self.hparams.predict_source is not None and (not self.hparams.num_clusters
                                                                    or self.hparams.instruction_clusters)
        if not predict_only:
            self._generate_demo()

    def _generate_demo(self) -> None:
        """Writes the demo copy of every served demo dataset (idempotent: each generator checks its marker)."""
        sizes = {"unifood": {"train": self.hparams.demo_train_size, "val": self.hparams.demo_eval_size,
                             "test": self.hparams.demo_eval_size}}
        total = self.hparams.demo_nutrition5k_size
        sizes["nutrition5k"] = {"train": total - total // 5, "test": total // 5}
        for name, source in self.sources.items():
            if source.demo:
                source.write_demo(self.hparams.demo_seed, sizes.get(name))

    def _read(self, dataset: str, split: str) -> list[FoodRecord]:
        records = self.sources[dataset].read(split, self.hparams.on_error, self.skipped, self.hparams.val_fraction)
        if self.ingredient_vocabulary is not None:
            records = [with_vocabulary(record, self.ingredient_vocabulary) for record in records]
        return records

    @property
    def evaluation_pairs(self) -> dict[str, list[str]]:
        """The tasks scored per served dataset: those its labels can serve among ``eval_tasks`` (fixed before any
        sample is read, so every DDP process builds the same metrics)."""
        return {name: [task for task in source.tasks if task in self.hparams.eval_tasks]
                for name, source in self.sources.items()}

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.hparams.predict_source is not None:
            self._setup_predict()
            if not self.hparams.num_clusters:
                return
            if self.hparams.instruction_clusters and self._clusters is None:
                # The adapter's own clusterer: no training data is read (issue 26).
                self._clusters = InstructionClusters.load(self.hparams.instruction_clusters)
                if self._clusters is None:
                    raise MissingFileError(f"data.instruction_clusters: {self.hparams.instruction_clusters} holds no "
                                           "instruction clusterer (instruction_clusters.json)")
            if self._clusters is not None and self.predict_dataset.cluster_ids is None and not self.datasets:
                self._place_predict_requests()
                return
        if self.datasets:
            if self.predict_dataset is not None and self.predict_dataset.cluster_ids is None and self._clusters:
                self._place_predict_requests()  # predict after fit in one process: the clusters exist already
            self._check_split_for(stage)
            return
        # prepare_data runs on one process per node; generation is idempotent, so ensure it here as well.
        self._generate_demo()
        for split, tasks in (("train", self.hparams.train_tasks), ("val", self.hparams.eval_tasks),
                             ("test", self.hparams.eval_tasks)):
            samples = []
            for dataset in self.served:
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
                            if task_available(record, task)]
            if split != "train":
                # Batches of one task generate together and stop together: short answers do not wait for recipes.
                samples.sort(key=lambda sample: (sample.record.dataset, sample.task))
            if not samples and split not in self.missing_splits:
                raise UserError(f"split {split!r} of {', '.join(self.served)} has no sample for tasks {tasks}")
            if samples:
                self.datasets[split] = InstructionDataset(samples, self.hparams.seed)
        self.records.setdefault("val", [])
        self.records.setdefault("test", [])
        if self.hparams.num_clusters:
            self._assign_clusters()
        self._compute_floors()
        rank_zero_info(self.summary())
        self._check_split_for(stage)

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
        requests = read_prediction_requests(self.hparams.predict_source, self.hparams.predict_tasks)
        skipped = SkipCounter()
        kept = drop_unreadable_images(requests, skipped)
        if skipped:
            rank_zero_warn(f"predict: skipped {sum(skipped.values())} request(s): {skipped.report()}")
        if not kept:
            raise UserError(f"data.predict_source: none of the {len(requests)} requests in "
                            f"{self.hparams.predict_source} has a readable image")
        self.skipped.update(skipped)
        self.predict_dataset = PredictionDataset(kept)
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
            raise UserError("data.sampling_weights: every training sample has weight 0")
        return torch.tensor(values, dtype=torch.double)

    def _loader(self, split: str) -> DataLoader:
        batch_size = self.hparams.batch_size if split == "train" else self.hparams.eval_batch_size
        collate_fn = self._collate()
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
            raise UserError("predict needs data.predict_source: a folder of images or a JSON/JSONL file of requests")
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


def _warn_about_deprecated_keys(**values) -> None:
    """Configs of earlier versions set these (the CLI linked them from the model); they are accepted, ignored, and
    named once so that the user can delete them."""
    given = [f"data.{key}" for key, value in values.items() if value is not None]
    if given:
        rank_zero_warn(f"{', '.join(given)}: no longer used (the model's conversation format tokenizes and prepares "
                       "the images from model.tokenizer and model.vision); delete the key(s) from the config")
