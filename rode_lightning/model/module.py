"""The LightningModule: training on answer tokens, validation by generating answers and scoring them.

Why this module is over 400 lines: it is the one class Lightning drives, and its hooks share state (the network built
once, the evaluation suites, the examples and losses of an epoch, the checkpoint's RNG states); the network, its
conversation format, the metrics and the checkpoint helpers already live in their own modules.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchmetrics import Metric

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.batch import FoodBatch
from rode_lightning.adapters.inject import adapter_layers
from rode_lightning.adapters.saving import load_adapter, save_adapter, saved_cluster_embedding_shape
from rode_lightning.adapters.sparsity import SparsityController, gate_counts
from rode_lightning.compat import attached_trainer, ignore_in_ddp, incompatible_keys, load_pending_loader_states
from rode_lightning.conventions import IGNORE_INDEX
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.metrics.answers import structured_answer
from rode_lightning.metrics.results import console_table, write_results
from rode_lightning.metrics.suite import EvaluationSuite, flatten_result
from rode_lightning.scale.checkpointing import (FINGERPRINT_KEY, RNG_KEY, check_checkpoint_keys,
                                                collect_rng_states, frozen_fingerprint, frozen_weights_match,
                                                restore_rng_states, trainable_names)
from rode_lightning.model.language import LanguageConfig
from rode_lightning.model.adapted import AdaptedModel
from rode_lightning.model.formats import ChatTemplateFormat, ConversationFormat, LlavaFormat
from rode_lightning.model.generation import Generated, generate
from rode_lightning.model.lmm import FoodLMM
from rode_lightning.model.lr_schedule import warmup_cosine
from rode_lightning.model.quantization import QuantizationConfig, is_quantized
from rode_lightning.model.transformers_base import (TransformersConfig, TransformersLMM, image_token_id_of,
                                                     load_processor)
from rode_lightning.scale.sharded_checkpoint import (install_checkpoint_io, is_sharded_checkpoint,
                                                     read_sharded_checkpoint)
from rode_lightning.model.vision import VisionConfig
from rode_lightning.user_errors import UserError


SPARSITY_KEY = "sparsity_controller"
BASES = ("llava", "transformers")


class FoodLMMModule(L.LightningModule):
    """A food LMM with adapters, trained with next-token cross-entropy on answers.

    Args:
        vision: ``llava`` base: vision encoder shape or preset.
        language: ``llava`` base: language model shape, or the local path of real weights.
        adapter: adapter method, expert ranks and target layers.
        tokenizer: ``llava`` base: ``demo`` or a local tokenizer directory; the conversation format tokenizes the
            data with it.
        train_projector: train the connector between vision tower and language model along with the adapters
            (the ``llava`` base's projector; a transformers model's own connector, e.g. Qwen's merger).
        learning_rate: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: optimizer steps of linear warm-up before cosine decay to zero.
        max_new_tokens: longest generated answer during validation, test and predict (recipes are the longest).
        prediction_examples: predictions per (dataset, task) written next to the results table, beside the
            ground truth, for a person to read.
        adapter_path: an adapter directory (written at the end of ``fit`` into ``<log dir>/adapter``) to load
            after building the model, e.g. for ``validate``, ``test`` or ``predict``.
        gradient_checkpointing: recompute each decoder block's activations during backward (less memory, ~30%
            more compute). Auxiliary router losses are collected from the first forward, so they are unaffected.
        compile: a ``torch.compile`` backend (``inductor`` on a GPU) for every decoder block; ``null``: eager.
        base: which base model: ``llava`` (the RoDE paper's LLaVA-1.5: an open_clip vision tower, an MLP projector
            and a LLaMA, shaped or loaded by ``vision``, ``language`` and ``tokenizer``) or ``transformers`` (any
            transformers image-text-to-text model from the local directory ``transformers.path``, spelled by its
            own processor and chat template; ``vision``, ``language`` and ``tokenizer`` are then unused).
        transformers: ``transformers`` base: the model directory, its dtype, image size bounds, end-of-turn token.
        quantization: the frozen base in 8 or 4 bits (torchao or bitsandbytes), under fp32 adapters, as QLoRA
            trains; ``bits: null`` (the default) keeps it in its dtype. One process or DDP; FSDP refuses it.
    """

    def __init__(
        self,
        vision: VisionConfig = VisionConfig(),
        language: LanguageConfig = LanguageConfig(),
        adapter: AdapterConfig = AdapterConfig(),
        tokenizer: str = "demo",
        train_projector: bool = True,
        learning_rate: float = 3e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        max_new_tokens: int = 64,
        prediction_examples: int = 8,
        adapter_path: str | None = None,
        gradient_checkpointing: bool = False,
        compile: str | None = None,
        base: Literal["llava", "transformers"] = "llava",
        transformers: TransformersConfig = TransformersConfig(),
        quantization: QuantizationConfig = QuantizationConfig(),
    ):
        super().__init__()
        _check_training_numbers(learning_rate=learning_rate, weight_decay=weight_decay, warmup_steps=warmup_steps,
                                max_new_tokens=max_new_tokens, prediction_examples=prediction_examples)
        self.save_hyperparameters()
        # Kept as objects: under LightningCLI ``hparams`` holds the raw config (plain dicts) for logging.
        if base not in BASES:
            raise UserError(f"model.base: {base!r}; expected one of {', '.join(BASES)}")
        self.vision_config, self.language_config, self.adapter_config = vision, language, adapter
        self.transformers_config, self.quantization_config = transformers, quantization
        self.model: AdaptedModel | None = None
        self._conversation_format: ConversationFormat | None = None
        self.evaluation = torch.nn.ModuleDict({stage: EvaluationSuite() for stage in ("val", "test")})
        # RoDE with controlled sparsity (adapter.sparsity_target): ReMoE's adaptive L1 coefficient.
        self.sparsity = (SparsityController(adapter.sparsity_target, adapter.sparsity_coefficient,
                                            adapter.sparsity_update_rate)
                         if adapter.sparsity_target is not None else None)
        self._examples: dict[str, list[dict]] = {"val": [], "test": []}
        self._loss_totals: dict[str, list[float]] = {}  # stage -> [sum of batch losses x batch size, samples]
        # Set by the router-statistics callback while it counts the routing behind generated tokens: the
        # evaluation's generation then records each token's gates, kept in ``last_generation`` until the next.
        self.record_generation_gates = False
        self.last_generation: list[Generated] | None = None

    @property
    def is_transformers_base(self) -> bool:
        return self.hparams.base == "transformers"

    @property
    def processor(self):
        """The transformers base's processor (loaded once)."""
        if getattr(self, "_processor", None) is None:
            self._processor = load_processor(self.transformers_config)
        return self._processor

    @property
    def tokenizer(self):
        return self.processor.tokenizer if self.is_transformers_base else load_tokenizer(self.hparams.tokenizer)

    @property
    def conversation_format(self) -> ConversationFormat:
        """How this model spells a conversation (the data loaders' collate function): LLaVA-1.5's template with one
        ``<image>`` token per patch of ``model.vision``, pixels at its input size; or the transformers base's
        processor and chat template."""
        if self._conversation_format is None:
            if self.is_transformers_base:
                self._conversation_format = ChatTemplateFormat(self.processor, self.transformers_config.end_of_turn,
                                                               image_token_id=image_token_id_of(self.transformers_config))
            else:
                self._conversation_format = LlavaFormat(self.tokenizer, self.vision_config.image_size,
                                                        self.vision_config.num_patches)
        return self._conversation_format

    def _build_model(self, centroids: torch.Tensor | None) -> AdaptedModel:
        if self.is_transformers_base:
            return TransformersLMM(self.transformers_config, self.adapter_config, self.processor,
                                   self.hparams.train_projector, cluster_centroids=centroids,
                                   quantization=self.quantization_config)
        return FoodLMM(self.vision_config, self.language_config, self.adapter_config, self.tokenizer,
                       self.hparams.train_projector, cluster_centroids=centroids,
                       quantization=self.quantization_config)

    def configure_model(self) -> None:
        """Builds the network once; Lightning calls this before optimizers exist, on the right device.

        Under ``ModelParallelStrategy`` (the only strategy that gives the module a device mesh) the network is then
        sharded with FSDP2 (``scale/sharding.py``), also once: Lightning may call this hook again (``validate``
        after ``fit``), and a second call neither rebuilds nor reshards.
        """
        if self.device_mesh is not None and self.quantization_config.enabled:
            raise UserError("model.quantization: FSDP2 cannot shard quantized weights (torchao's and bitsandbytes' "
                            "tensors are not sharded by fully_shard here); train a quantized base on one device or "
                            "with DDP, or shard an unquantized one")
        if self.model is None:
            centroids = None
            routes_by_cluster = self.adapter_config.adapter_method.needs_cluster_features
            if routes_by_cluster and attached_trainer(self) is not None:
                centroids = getattr(self.trainer.datamodule, "cluster_centroids", None)
            self.model = self._build_model(centroids)
            if routes_by_cluster and centroids is None and self.hparams.adapter_path:
                self._fit_cluster_width(saved_cluster_embedding_shape(self.hparams.adapter_path))
            if self.hparams.gradient_checkpointing:
                self.model.enable_activation_checkpointing()
            if self.hparams.adapter_path:  # before sharding: loads whole tensors into the whole model
                load_adapter(self.model, self.adapter_config, self.hparams.adapter_path)
            if self.quantization_config.enabled:  # DDP cannot broadcast them; each process quantized the same
                ignore_in_ddp(self, [f"model.{name}.{tensor}" for name, module in self.model.named_modules()
                                     if is_quantized(module) for tensor, _ in module.named_parameters(recurse=False)])
        if self.device_mesh is not None:
            from rode_lightning.scale.sharding import shard_model
            from rode_lightning.scale.strategy import warn_if_checkpoints_cannot_resume

            shard_model(self.model, self.device_mesh)
            warn_if_checkpoints_cannot_resume(getattr(attached_trainer(self), "strategy", None))
        if self.hparams.compile:
            self.model.compile_decoder_blocks(self.hparams.compile)

    def setup(self, stage: str) -> None:
        # Lightning restores --ckpt_path after this hook: let a one-process or DDP run read a sharded FSDP folder
        # (and every run write its checkpoint files complete or absent).
        if attached_trainer(self) is not None:
            install_checkpoint_io(self.trainer.strategy)
        datamodule = getattr(attached_trainer(self), "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "conversation_format"):
            datamodule.conversation_format = self.conversation_format  # the loaders batch in this model's spelling
        # One metric per (dataset, task) the data module serves; metric states are not saved in checkpoints, so
        # rebuilding them here changes nothing that is restored.
        pairs = getattr(datamodule, "evaluation_pairs", None)
        if pairs is not None and any(suite.pairs != EvaluationSuite(pairs).pairs for suite in self.evaluation.values()):
            self.evaluation = torch.nn.ModuleDict({stage: EvaluationSuite(pairs) for stage in ("val", "test")})
        vocabulary = getattr(datamodule, "ingredient_vocabulary", None)  # scored with the targets' clusters
        for suite in self.evaluation.values():
            for dataset in [dataset for dataset, task in suite.pairs if task == "ingredients"]:
                suite.metric(dataset, "ingredients").vocabulary = vocabulary

    def on_train_end(self) -> None:
        """Write the adapter-only checkpoint next to the logs, ready for ``--model.adapter_path``."""
        log_dir = self.trainer.log_dir  # a broadcast under DDP: every rank must ask, not only rank zero
        if self.trainer.is_global_zero and log_dir:
            path = save_adapter(self.model, self.adapter_config, Path(log_dir) / "adapter")
            # MoCLE: the instruction clusterer routes new questions (predict, chat) without the training data.
            clusters = getattr(getattr(self.trainer, "datamodule", None), "instruction_clusters", None)
            if clusters is not None and self.model.cluster_embedding is not None:
                clusters.save(path)
            rank_zero_info(f"adapter saved to {path}")

    # Training checkpoints (``--ckpt_path``) hold the trainable state only; see ``scale/checkpointing.py``.

    def _fit_cluster_width(self, saved_shape: tuple[int, ...] | None) -> None:
        """Give MoCLE's cluster tensors the width of those about to be loaded (``FoodLMM.set_cluster_width``)."""
        embedding = None if self.model is None else self.model.cluster_embedding
        if saved_shape is not None and embedding is not None and tuple(embedding.shape) != saved_shape:
            self.model.set_cluster_width(saved_shape[-1])

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's ``load_from_checkpoint``, which also takes a sharded checkpoint folder written under FSDP
        (``scale/sharded_checkpoint.py``)."""
        if is_sharded_checkpoint(checkpoint_path):
            buffer = io.BytesIO()
            torch.save(read_sharded_checkpoint(checkpoint_path), buffer)
            buffer.seek(0)
            checkpoint_path = buffer
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only the trainable tensors (the frozen weights come from the model as built) and add the RNG states,
        which Lightning does not save and dropout draws from."""
        trainable = trainable_names(self)
        checkpoint["state_dict"] = {name: tensor for name, tensor in checkpoint["state_dict"].items()
                                    if name in trainable}
        checkpoint[RNG_KEY] = collect_rng_states(self.device)
        if self.sparsity is not None:
            checkpoint[SPARSITY_KEY] = self.sparsity.state_dict()
        checkpoint[FINGERPRINT_KEY] = frozen_fingerprint(self)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if attached_trainer(self) is None:  # load_from_checkpoint: built without the data's cluster centroids
            saved = checkpoint.get("state_dict", {}).get("model.cluster_embedding")
            self._fit_cluster_width(None if saved is None else tuple(saved.shape))
        fingerprint = checkpoint.get(FINGERPRINT_KEY)
        if isinstance(fingerprint, dict) and self.model is not None and not frozen_weights_match(self, fingerprint):
            rank_zero_warn("the frozen weights of this model differ from those the checkpoint was trained with "
                           "(another model.language.path or model.vision.checkpoint, or the demo's random language "
                           "model built from another seed_everything): its adapters will not fit them")
        if self.sparsity is not None and SPARSITY_KEY in checkpoint:
            self.sparsity.load_state_dict(checkpoint[SPARSITY_KEY])
        # Set when training starts (`on_train_start`), after the network was built and everything else was restored.
        self._rng_states_to_restore = checkpoint.get(RNG_KEY)

    def on_train_start(self) -> None:
        # Where the training data of the checkpoint's epoch got to (data/resumable.py). Lightning stashes it and loads
        # it when it builds the loader, but `estimated_stepping_batches` (configure_optimizers) built it before the
        # checkpoint was read (Lightning issue #20550), so it would be dropped; the loader has not started yet. A no-op
        # where Lightning has already loaded it.
        load_pending_loader_states(self.trainer)
        states = getattr(self, "_rng_states_to_restore", None)
        if states is not None:
            restore_rng_states(states, self.device)
            self._rng_states_to_restore = None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a checkpoint's trainable tensors into the network as built; frozen tensors in it are loaded too.

        With ``strict`` (Lightning's default) every trainable parameter must be in ``state_dict`` and every key must
        name a tensor of this module, else a ``ValueError`` names the keys that do not fit. Builds the network first
        if ``configure_model`` has not run. Returns the missing trainable keys and the unexpected keys.
        """
        if self.model is None:
            self.configure_model()
        if strict:
            check_checkpoint_keys(self, state_dict)
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        trainable = trainable_names(self)
        return incompatible_keys([name for name in result.missing_keys if name in trainable], result.unexpected_keys)

    def forward_batch(self, batch: FoodBatch) -> torch.Tensor:
        """Teacher-forced next-token logits of the whole conversations, ``(batch, sequence, vocab)``."""
        return self.model.forward_batch(batch)

    def answer_loss(self, batch: FoodBatch) -> torch.Tensor:
        logits = self.forward_batch(batch)
        # Position t predicts token t + 1; prompt, image and padding positions carry IGNORE_INDEX labels.
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch.labels[:, 1:].flatten(),
                               ignore_index=IGNORE_INDEX)

    def training_step(self, batch: FoodBatch, batch_idx: int) -> torch.Tensor:
        loss = self.answer_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        # Collected right after the forward: activation checkpointing re-runs layers during backward, and the
        # losses recorded then are not the ones in this graph.
        auxiliary = self.model.auxiliary_loss()
        if auxiliary is not None:
            # The method's own loss (top-1: load balancing) at its weight, or with adapter.sparsity_target ReMoE's
            # L1 term at the adaptive coefficient.
            method = self.adapter_config.adapter_method
            weight = (self.sparsity.coefficient if self.sparsity is not None
                      else method.auxiliary_loss_weight(self.adapter_config))
            loss = loss + weight * auxiliary
            self.log(f"train/{method.auxiliary_loss_name or 'auxiliary_loss'}", auxiliary, batch_size=len(batch))
            if self.sparsity is not None:
                self._update_sparsity_coefficient(len(batch))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=len(batch))
        return loss

    def _update_sparsity_coefficient(self, batch_size: int) -> None:
        """ReMoE's rule on this step's sparsity over every process's real tokens (one small all-reduce)."""
        counts = gate_counts(list(adapter_layers(self.model.adapted_root).values()))
        if counts is None:
            return
        counts = self.trainer.strategy.reduce(counts.double(), reduce_op="sum") if attached_trainer(self) else counts
        sparsity = float(counts[0] / counts[1]) if counts[1] > 0 else 1.0
        self.log("train/router_sparsity", sparsity, batch_size=batch_size)
        self.log("train/sparsity_coefficient", self.sparsity.coefficient, batch_size=batch_size)
        self.sparsity.update(sparsity)

    def generate_answers(self, batch: FoodBatch, rows: list[int] | None = None) -> list[str]:
        """Greedy answers to the prompts of ``batch`` (of its ``rows`` only, when given), as text."""
        batch = batch if rows is None else batch.select(rows)
        generated = generate(self.model, batch, self.hparams.max_new_tokens,
                             record_gates=self.record_generation_gates)
        self.last_generation = generated
        return self.conversation_format.decode([row.token_ids for row in generated])

    def _evaluation_step(self, batch: FoodBatch, stage: str) -> None:
        batch_size = len(batch)
        loss = self.answer_loss(batch)
        self.log(f"{stage}/loss", loss, batch_size=batch_size, sync_dist=True)
        totals = self._loss_totals.setdefault(stage, [0.0, 0.0])
        totals[0] += float(loss) * batch_size
        totals[1] += batch_size
        suite, examples = self.evaluation[stage], self._examples[stage]
        for row, prediction in enumerate(self.generate_answers(batch)):
            dataset, task, reference = batch.datasets[row], batch.tasks[row], batch.references[row]
            suite.update(dataset, task, [prediction], [reference])
            shown = sum(1 for example in examples if example["dataset"] == dataset and example["task"] == task)
            if shown < self.hparams.prediction_examples:
                examples.append({"dataset": dataset, "task": task, "id": batch.ids[row],
                                 "prediction": prediction, "reference": reference})

    def validation_step(self, batch: FoodBatch, batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: FoodBatch, batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._examples["val"] = []
        self._loss_totals.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._examples["test"] = []
        self._loss_totals.pop("test", None)

    def _evaluation_epoch_end(self, stage: str) -> None:
        suite = self.evaluation[stage]
        values: dict[str, torch.Tensor] = {}
        results: dict[str, dict[str, float]] = {}
        for dataset, task in suite.pairs:
            metric = suite.metric(dataset, task)
            if not self._updated_on_any_rank(metric):
                continue
            for name, value in flatten_result(task, self._compute(metric)).items():
                values[f"{stage}/{dataset}/{name}"] = value
                results.setdefault(dataset, {})[name] = float(value)
        suite.reset()
        datamodule = getattr(self.trainer, "datamodule", None)
        # The floors a model must beat, computed by the data module from the labels alone.
        floors = (getattr(datamodule, "floors", None) or {}).get(stage, {})
        for dataset, row in floors.items():
            for name, value in row.items():
                values[f"{stage}/{dataset}/{name}"] = torch.tensor(value)
        if not values:
            return
        # Already global (torchmetrics gathered them); the mean over ranks of equal values only quiets Lightning.
        self.log_dict(values, sync_dist=True)
        loss = self._mean_loss(stage)
        if self.trainer.sanity_checking:
            return
        evaluated = self._evaluated(stage)
        # self.print: on rank zero only, and above the progress bar rather than glued to it.
        self.print(console_table(f"{stage} results: {evaluated}" + ("" if loss is None else f" (loss {loss:.4f})"),
                                 results, floors))
        log_dir = self.trainer.log_dir  # a broadcast under DDP: every rank asks
        if self.trainer.is_global_zero and log_dir:
            path = write_results(Path(log_dir) / "results", stage, results, self._examples[stage],
                                 self.current_epoch, self.global_step, floors, evaluated=evaluated, loss=loss)
            self.print(f"{stage} results written to {path}")

    def _mean_loss(self, stage: str) -> float | None:
        """The answer loss over the whole split, summed on every process (every rank must call this)."""
        totals = torch.tensor(self._loss_totals.pop(stage, [0.0, 0.0]), dtype=torch.float64, device=self.device)
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        return float(totals[0] / totals[1]) if totals[1] > 0 else None

    def _evaluated(self, stage: str) -> str:
        """What the results are of, for their heading: an epoch of this run, a checkpoint, an adapter, or none."""
        split = {"val": "validation", "test": "test"}[stage] + " split"
        if self.trainer.state.fn == "fit":
            return f"{split}, epoch {self.current_epoch} (step {self.global_step}) of this run"
        if self.trainer.ckpt_path:
            return f"{split}, checkpoint {self.trainer.ckpt_path}"
        if self.hparams.adapter_path:
            return f"{split}, adapter {self.hparams.adapter_path}"
        return f"{split}, the model as configured (no trained adapter loaded)"

    def _updated_on_any_rank(self, metric: Metric) -> bool:
        """Whether any process fed this metric, agreed by all processes.

        `compute()` gathers the metric state across processes, so every rank must call it or none may: a rank
        whose shard of the evaluation set held no sample of this task would otherwise skip the gather and leave
        the others waiting in it forever.
        """
        return self.trainer.strategy.reduce_boolean_decision(metric.update_called, all=False)

    @staticmethod
    def _compute(metric: Metric):
        # A rank that saw no sample of the task still joins the gather with its empty state; torchmetrics would
        # warn that compute() came before update() there, which is expected and not worth a warning per epoch.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*was called before the ``update`` method.*")
            return metric.compute()

    def on_validation_epoch_end(self) -> None:
        self._evaluation_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._evaluation_epoch_end("test")

    def predict_step(self, batch: FoodBatch, batch_idx: int) -> list[dict]:
        """Answers with, where the task has them, the structured values parsed back from the text."""
        answers = self.generate_answers(batch)
        if batch.has_answers:  # an evaluation batch: keep the reference beside the prediction
            return [{"id": sample_id, "dataset": dataset, "task": task, "prediction": answer, "reference": reference}
                    for sample_id, dataset, task, answer, reference
                    in zip(batch.ids, batch.datasets, batch.tasks, answers, batch.references)]
        return [{"id": sample_id, "image": image, "question": question, "task": task, "answer": answer,
                 **structured_answer(task, answer)}
                for sample_id, image, question, task, answer
                in zip(batch.ids, batch.image_paths, batch.questions, batch.tasks, answers)]

    def configure_optimizers(self):
        parameters = [parameter for parameter in self.model.parameters() if parameter.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=self.hparams.learning_rate,
                                      weight_decay=self.hparams.weight_decay)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = warmup_cosine(optimizer, min(self.hparams.warmup_steps, total_steps), total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _check_training_numbers(**values: float) -> None:
    """Refuse a number the optimizer or ``generate`` would refuse later, far from the key: ``model.<name>``."""
    lowest = {"learning_rate": (0.0, False), "max_new_tokens": (1, True)}
    for name, value in values.items():
        bound, inclusive = lowest.get(name, (0, True))
        if value < bound or (value == bound and not inclusive):
            raise UserError(f"model.{name}: {value}; expected a number {'at least' if inclusive else 'above'} {bound}")
