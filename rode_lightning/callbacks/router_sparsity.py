"""Router sparsity and expert usage during training, logged to TensorBoard.

RoDE's claim is that a ReLU router is sparse (an expert with a negative score is switched off) without being forced
to pick one expert, and that different tasks end up using different experts (the paper's Figure 6). This callback
makes both visible while training: every ``every_n_steps`` optimizer steps it reads the gates that each
:class:`~rode_lightning.adapters.layer.MixtureOfLoRALinear` kept from the forward pass of the current training batch
and logs, over the batch's real tokens (``attention_mask == 1``):

* ``router/<layer>/sparsity``: fraction of (token, expert) gates that are exactly zero;
* ``router/<layer>/mean_gate/expert_<i>``: mean gate of expert ``i``;
* ``router/<layer>/token_share/expert_<i>``: fraction of tokens whose gate for expert ``i`` is positive;
* ``router/<layer>/gates``: histogram of the gate values (TensorBoard only);
* ``router/heatmap/<task>``: image of the mean gate of every (layer, expert) over that task's tokens (TensorBoard
  only).

``<layer>`` is a short unique module name, ``layers.3.q_proj`` for ``model.language_model.model.layers.3.self_attn
.q_proj``. Statistics are sums and counts reduced across processes (one sum per statistic, so DDP runs report the
whole global batch, not rank zero's share); the histogram buckets are reduced too, over a range agreed first with a
max-reduction. The values describe the one batch that ends on the logged step (under gradient accumulation, the
last micro-batch of that step).

The pure computations (``callbacks/gate_statistics.py``) take tensors only and are tested alone. Why this module is
still over 400 lines: it is one callback whose hooks share state (the step's batch, the evaluation routing, the agreed
histogram range); its computations and figures already live in ``gate_statistics.py`` and ``router_heatmaps.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from rode_lightning.adapters.inject import adapter_layers
from rode_lightning.adapters.layer import MixtureOfLoRALinear
from rode_lightning.atomic import save_figure_atomically, write_text_atomically
from rode_lightning.batch import FoodBatch
from rode_lightning.callbacks.gate_statistics import HISTOGRAM_BINS, GateStatistics, gate_histogram, gate_statistics
from rode_lightning.callbacks.router_heatmaps import EvaluationRouting, router_heatmap_figure, task_routing_figure
from rode_lightning.callbacks.task_routing import PERMUTATION_DRAWS, TaskRouting, kind_sums
from rode_lightning.conventions import TASKS
from rode_lightning.user_errors import UserError

def short_layer_names(names: list[str]) -> dict[str, str]:
    """Readable, unique tag names: ``...layers.3.self_attn.q_proj`` -> ``layers.3.q_proj``.

    A name whose short form would collide with another's keeps its full path (without leading ``model.`` and
    ``language_model.`` parts).
    """
    def long_form(name: str) -> str:
        return re.sub(r"^(?:(?:model|language_model|module)\.)+", "", name) or name

    def short_form(name: str) -> str:
        match = re.search(r"(?:^|\.)(layers\.\d+)\.(?:.+\.)?([^.]+)$", name)
        return f"{match.group(1)}.{match.group(2)}" if match else long_form(name)

    shorts = {name: short_form(name) for name in names}
    counts: dict[str, int] = {}
    for short in shorts.values():
        counts[short] = counts.get(short, 0) + 1
    result = {name: (short if counts[short] == 1 else long_form(name)) for name, short in shorts.items()}
    if len(set(result.values())) != len(result):  # pathological: fall back to the module paths themselves
        result = {name: name for name in names}
    return result


def food_batch(batch) -> FoodBatch:
    """``batch`` itself: the statistics need the typed batch's masks and tasks, and a batch of another kind would
    otherwise turn them off without a word."""
    if not isinstance(batch, FoodBatch):
        raise TypeError(f"RouterSparsityMonitor reads a rode_lightning.batch.FoodBatch; the loader gave a "
                        f"{type(batch).__name__}")
    return batch


def write_router_files(directory: Path, stage: str, router: dict, figure) -> None:
    """``router_<stage>.json`` and ``router_<stage>.png`` in ``directory``, each complete or absent
    (``rode_lightning/atomic.py``): a run killed while writing keeps the previous evaluation's file."""
    # No final newline: the same bytes as the files written before they were written atomically.
    write_text_atomically(directory / f"router_{stage}.json", json.dumps(router, indent=2))
    save_figure_atomically(figure, directory / f"router_{stage}.png", bbox_inches="tight")


def gathered_rows(trainer: L.Trainer, rows: torch.Tensor) -> torch.Tensor:
    """Every process's ``(n_i, F)`` rows stacked (a collective: every process must call it); ``n_i`` may differ,
    so the rows are padded to the longest before the gather and cut after."""
    if trainer.world_size <= 1:
        return rows
    device = trainer.strategy.root_device
    dtype = _reduction_dtype(device)
    counts = trainer.strategy.all_gather(torch.tensor([rows.shape[0]], device=device)).reshape(-1).tolist()
    padded = torch.zeros(max(counts), rows.shape[1], dtype=dtype, device=device)
    padded[:rows.shape[0]] = rows.to(device, dtype)
    everything = trainer.strategy.all_gather(padded).cpu().double()
    return torch.cat([everything[rank, :count] for rank, count in enumerate(counts)])


def _reduction_dtype(device: torch.device) -> torch.dtype:
    """Sums are reduced in float64, which MPS does not have."""
    return torch.float32 if device.type == "mps" else torch.float64


class RouterSparsityMonitor(Callback):
    """Logs how sparse each adapted layer's router is and which experts each task uses.

    Every ``every_n_steps`` optimizer steps, for every mixture-of-LoRA layer and over the real tokens of the
    training batch that ends on that step: the fraction of zero gates (``router/<layer>/sparsity``), each expert's
    mean gate (``router/<layer>/mean_gate/expert_<i>``), the fraction of tokens that use each expert
    (``router/<layer>/token_share/expert_<i>``), a histogram of the gates (``router/<layer>/gates``) and, per task,
    a layers x experts heatmap of the mean gate (``router/heatmap/<task>``, the RoDE paper's Figure 6). Values are
    reduced over all processes; only rank zero logs. Histograms and heatmaps need a TensorBoard logger; with
    other loggers only the scalars are logged. With plain LoRA (no router) the callback does nothing.

    Args:
        every_n_steps: log every this many optimizer steps (``trainer.global_step``).
        log_histograms: also log a histogram of each layer's gate values (TensorBoard only).
        log_heatmap: also log, per task, an image of the mean gate of every (layer, expert) (TensorBoard only).
        evaluation_heatmaps: after every validation and test, the gates averaged over the whole split per task and
            per dataset (``callbacks/router_heatmaps.py``; one extra teacher-forced forward per evaluation batch):
            ``router_<stage>.json`` and ``router_<stage>.png`` beside the results table, the figure as
            ``router/split_heatmap/<stage>`` and each group's sparsity as ``router/<stage>/<group>/sparsity``.
            Also over the answer, image and generated tokens alone, with the task divergence per layer beside its
            permutation baseline (``callbacks/task_routing.py``): ``kinds`` in ``router_<stage>.json`` and, per kind
            and layer, ``router/<stage>/divergence/<kind>/<layer>`` and ``.../baseline_95/...``; after a test also
            ``router_test_tasks.png`` and the figure as ``router/task_routing/test``.
        permutation_draws: shuffled task labellings of the permutation baseline (0: none).
        permutation_seed: the seed of those shuffles (the same seed draws the same labellings).
    """

    def __init__(self, every_n_steps: int = 50, log_histograms: bool = True, log_heatmap: bool = True,
                 evaluation_heatmaps: bool = True, permutation_draws: int = PERMUTATION_DRAWS,
                 permutation_seed: int = 0):
        super().__init__()
        self.evaluation_heatmaps = evaluation_heatmaps
        if permutation_draws < 0:
            raise UserError(f"RouterSparsityMonitor.permutation_draws: {permutation_draws} must be 0 or more")
        self.permutation_draws = permutation_draws
        self.permutation_seed = permutation_seed
        self._evaluation = None  # EvaluationRouting while a validation or test epoch runs
        self._task_routing: TaskRouting | None = None  # per-sample sums by kind of token, while one runs
        if every_n_steps < 1:
            raise UserError(f"RouterSparsityMonitor.every_n_steps: {every_n_steps} must be at least 1")
        self.every_n_steps = every_n_steps
        self.log_histograms = log_histograms
        self.log_heatmap = log_heatmap
        self.tasks: tuple[str, ...] = TASKS
        self._layers: dict[str, MixtureOfLoRALinear] = {}  # short name -> layer
        self._last_logged_step: int | None = None
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._layers = self._named_layers(pl_module)
        self._last_logged_step = None
        if not self._layers:
            self._warn_once("no_layers", "RouterSparsityMonitor: the model has no mixture-of-experts adapter layer "
                                         "(plain LoRA has no router), so there is nothing to monitor.")
        elif not trainer.loggers:
            self._warn_once("no_logger", "RouterSparsityMonitor: the trainer has no logger; nothing is logged.")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # Forget the gates of earlier forwards (e.g. validation's), so at batch end only this batch's remain.
        for layer in self._layers.values():
            layer.last_gates = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if (not self._layers or not trainer.loggers or step % self.every_n_steps
                or step == self._last_logged_step):
            return
        self._last_logged_step = step
        self.log_batch(trainer, batch, step)

    # ------------------------------------------------------------------ evaluation split
    def _start_evaluation(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluation = None
        self._task_routing = None
        if not self.evaluation_heatmaps or trainer.sanity_checking:
            return
        self._evaluation_layers = self._named_layers(pl_module)
        if not self._evaluation_layers:
            return
        self._evaluation = EvaluationRouting({name: layer.num_experts for name, layer in
                                              self._evaluation_layers.items()},
                                             [*self.tasks, *self._served_datasets(trainer)])
        self._task_routing = self._start_task_routing(trainer, pl_module)

    def _start_task_routing(self, trainer: L.Trainer, pl_module: L.LightningModule) -> TaskRouting | None:
        """Per-sample sums over answer, image, generated and all tokens (``callbacks/task_routing.py``), for the
        language model's layers (a vision tower's adapters route patches, not the conversation's tokens)."""
        language_model = getattr(getattr(pl_module, "model", None), "language_model", None)
        if language_model is None:
            return None
        short = {id(layer): name for name, layer in self._evaluation_layers.items()}
        self._generation_names = {name: short[id(layer)] for name, layer in adapter_layers(language_model).items()
                                  if id(layer) in short}
        layers = list(self._generation_names.values())
        experts = {self._evaluation_layers[name].num_experts for name in layers}
        if not layers or len(experts) != 1:
            return None
        if hasattr(pl_module, "record_generation_gates"):
            pl_module.record_generation_gates = True
        return TaskRouting(layers, experts.pop(), list(self.tasks), self._served_datasets(trainer))

    @staticmethod
    def _served_datasets(trainer: L.Trainer) -> list[str]:
        """Every dataset the evaluation may hold, known on every process before any batch (the groups must agree
        across processes for the reduction)."""
        pairs = getattr(trainer.datamodule, "evaluation_pairs", None) if trainer.datamodule is not None else None
        return list(pairs) if pairs is not None else []

    def _evaluation_batch(self, pl_module: L.LightningModule, batch) -> None:
        if self._evaluation is None:
            return
        batch = food_batch(batch)
        if batch.input_ids is None:  # questions without reference answers: no teacher-forced forward to read
            return
        with torch.no_grad():  # the teacher-forced forward the loss sees: question and reference answer
            pl_module.forward_batch(batch)
        gates = {name: layer.last_gates for name, layer in self._evaluation_layers.items()
                 if layer.last_gates is not None}
        row_groups = [[task, dataset] for task, dataset in zip(batch.tasks, batch.datasets)]
        self._evaluation.add(gates, batch.attention_mask, row_groups)
        if self._task_routing is not None:
            self._add_task_routing(pl_module, batch, gates)

    def _add_task_routing(self, pl_module: L.LightningModule, batch: FoodBatch, gates: dict[str, torch.Tensor]
                          ) -> None:
        routing = self._task_routing
        rows, length = batch.input_ids.shape[:2]
        if any(name not in gates or gates[name].shape[0] != rows * length for name in routing.layers):
            return
        per_layer = [gates[name].reshape(rows, length, -1).cpu() for name in routing.layers]
        real = batch.attention_mask.bool().cpu()
        nothing = torch.zeros_like(real)
        positions = {"all": real,
                     "answer": real & (batch.answer_mask.bool().cpu() if batch.answer_mask is not None else nothing),
                     "image": real & (batch.image_mask.bool().cpu() if batch.image_mask is not None else nothing)}
        sums = {kind: kind_sums(per_layer, where) for kind, where in positions.items()}
        generated = getattr(pl_module, "last_generation", None)
        if generated is not None and len(generated) == rows:
            sums["generated"] = self._generated_sums(generated, routing.layers, routing.experts)
        routing.add(sums, list(batch.tasks), list(batch.datasets))

    def _generated_sums(self, generated, layers: list[str], experts: int):
        """The sums over each row's generated tokens, from the gates the generation recorded."""
        by_short = {self._generation_names[name]: name for name in self._generation_names}
        longest = max((len(row.token_ids) for row in generated), default=0)
        positions = torch.zeros(len(generated), longest, dtype=torch.bool)
        per_layer = [torch.zeros(len(generated), longest, experts, dtype=torch.float64) for _ in layers]
        for row, answer in enumerate(generated):
            recorded = [answer.gates.get(by_short[name]) for name in layers]
            if any(gates is None for gates in recorded):
                continue
            count = min(len(gates) for gates in recorded)
            positions[row, :count] = True
            for table, gates in zip(per_layer, recorded):
                table[row, :count] = gates[:count].to(torch.float64)
        return kind_sums(per_layer, positions)

    def _end_evaluation(self, trainer: L.Trainer, stage: str) -> None:
        if self._evaluation is None:
            return
        evaluation, self._evaluation = self._evaluation, None
        task_routing, self._task_routing = self._task_routing, None
        if task_routing is not None and hasattr(trainer.lightning_module, "record_generation_gates"):
            trainer.lightning_module.record_generation_gates = False
            trainer.lightning_module.last_generation = None
        device = trainer.strategy.root_device
        total = trainer.strategy.reduce(evaluation.to_vector().to(device, _reduction_dtype(device)), reduce_op="sum")
        samples = gathered_rows(trainer, task_routing.matrix()) if task_routing is not None else None
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        evaluation.load_vector(total.detach().cpu().double())
        router = evaluation.as_dict(self._expert_ranks_of(self._evaluation_layers))
        if not router["groups"]:
            return
        tasks_figure = None
        if task_routing is not None and len(samples):
            router["kinds"] = task_routing.summary(samples, self.permutation_draws, self.permutation_seed)
            # Drawn for a test only: a figure of 4 x 5 panels takes seconds, and validation runs every epoch.
            if stage == "test":
                tasks_figure = task_routing_figure(router, f"task routing on the {stage} split")
            self._log_task_routing(trainer, stage, router, tasks_figure)
        step = trainer.global_step
        figure = router_heatmap_figure(router, f"mean gate over the {stage} split, step {step}")
        metrics = {f"router/{stage}/{group}/sparsity": values["sparsity"]
                   for group, values in router["groups"].items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(f"router/split_heatmap/{stage}", figure, global_step=step, close=False)
        if log_dir:
            write_router_files(Path(log_dir) / "results", stage, router, figure)
            if tasks_figure is not None:
                save_figure_atomically(tasks_figure, Path(log_dir) / "results" / f"router_{stage}_tasks.png",
                                       bbox_inches="tight")

    def _log_task_routing(self, trainer: L.Trainer, stage: str, router: dict, figure) -> None:
        """Each kind's divergence and baseline per layer as scalars, and the task-routing figure where one was drawn
        (TensorBoard)."""
        step = trainer.global_step
        metrics = {}
        for kind, values in router["kinds"].items():
            divergence = values["task_divergence"]
            for layer, observed, high in zip(router["layers"], divergence["divergence"], divergence["baseline_95"]):
                if observed is not None:
                    metrics[f"router/{stage}/divergence/{kind}/{layer}"] = observed
                if high is not None:
                    metrics[f"router/{stage}/baseline_95/{kind}/{layer}"] = high
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            if isinstance(logger, TensorBoardLogger) and figure is not None:
                logger.experiment.add_figure(f"router/task_routing/{stage}", figure, global_step=step, close=False)

    @staticmethod
    def _named_layers(pl_module: L.LightningModule) -> dict[str, MixtureOfLoRALinear]:
        """The module's mixture layers by their short names."""
        layers = adapter_layers(pl_module)
        names = short_layer_names(list(layers))
        return {names[name]: layer for name, layer in layers.items()}

    @staticmethod
    def _expert_ranks_of(layers: dict) -> list[int] | None:
        ranks = {tuple(layer.experts.ranks) for layer in layers.values()}
        return list(ranks.pop()) if len(ranks) == 1 else None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_evaluation(trainer, pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_evaluation(trainer, pl_module)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_batch(pl_module, batch)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._evaluation_batch(pl_module, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_evaluation(trainer, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_evaluation(trainer, "test")

    # ------------------------------------------------------------------ work
    def log_batch(self, trainer: L.Trainer, batch: FoodBatch, step: int) -> None:
        """Computes, reduces (a collective: every process must call this) and logs the statistics of ``batch``."""
        tensorboards = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if (self.log_histograms or self.log_heatmap) and not tensorboards:
            self._warn_once("not_tensorboard", "RouterSparsityMonitor: no TensorBoard logger, so only the scalars "
                                               "are logged (gate histograms and task heatmaps are skipped).")
        histograms = self.log_histograms and bool(tensorboards)
        device = trainer.strategy.root_device
        dtype = _reduction_dtype(device)

        layer_gates = self._real_gates(food_batch(batch), device)
        names = list(self._layers)
        statistics: list[GateStatistics] = []
        for name in names:
            layer = self._layers[name]
            found = layer_gates.get(name)
            if found is None:  # no gates from this batch on this process: contribute zeros
                gates = torch.zeros(0, layer.num_experts, device=device)
                found = (gates, torch.zeros(0, dtype=torch.bool, device=device),
                         torch.zeros(0, dtype=torch.long, device=device))
            gates, mask, task_ids = found
            statistics.append(gate_statistics(gates.to(device), mask, task_ids, len(self.tasks), dtype))

        vectors = [stats.to_vector() for stats in statistics]
        ranges: list[tuple[float, float]] = []
        if histograms:
            ranges = self._reduced_ranges(trainer, layer_gates, names, device, dtype)
            for name, (low, high) in zip(names, ranges):
                values = self._real_values(layer_gates.get(name), device).to(torch.float64)
                counts = (gate_histogram(values, low, high, HISTOGRAM_BINS, dtype)[1] if low <= high
                          else torch.zeros(HISTOGRAM_BINS, dtype=dtype, device=device))
                sums = torch.stack([values.sum(), (values ** 2).sum()]).to(dtype)
                vectors.append(torch.cat([sums, counts.to(device)]))

        total = trainer.strategy.reduce(torch.cat(vectors), reduce_op="sum")
        if not trainer.is_global_zero:
            return
        total = total.detach().to("cpu", torch.float64)
        offset = 0
        reduced: dict[str, GateStatistics] = {}
        for name, stats in zip(names, statistics):
            size = GateStatistics.vector_size(stats.num_experts, stats.num_tasks)
            reduced[name] = GateStatistics.from_vector(total[offset:offset + size], stats.num_experts, stats.num_tasks)
            offset += size

        metrics: dict[str, float] = {}
        for name, stats in reduced.items():
            if stats.tokens <= 0:
                continue
            metrics[f"router/{name}/sparsity"] = float(stats.sparsity)
            for expert in range(stats.num_experts):
                metrics[f"router/{name}/mean_gate/expert_{expert}"] = float(stats.mean_gate[expert])
                metrics[f"router/{name}/token_share/expert_{expert}"] = float(stats.token_share[expert])
        if metrics:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

        if histograms:
            for name, (low, high) in zip(names, ranges):
                size = 2 + HISTOGRAM_BINS
                sums, counts = total[offset:offset + 2], total[offset + 2:offset + size]
                offset += size
                stats = reduced[name]
                if stats.tokens <= 0 or not low <= high:
                    continue
                edges, _ = gate_histogram(torch.zeros(0), low, high, HISTOGRAM_BINS)
                for logger in tensorboards:
                    logger.experiment.add_histogram_raw(
                        f"router/{name}/gates", min=low, max=float(edges[-1]), num=int(counts.sum()),
                        sum=float(sums[0]), sum_squares=float(sums[1]), bucket_limits=edges.tolist(),
                        bucket_counts=counts.tolist(), global_step=step)
        if self.log_heatmap and tensorboards:
            for task_index, task in enumerate(self.tasks):
                if all(stats.task_tokens[task_index] <= 0 for stats in reduced.values()):
                    continue
                figure = self.heatmap_figure(reduced, task_index, task, step)
                for logger in tensorboards:
                    logger.experiment.add_figure(f"router/heatmap/{task}", figure, global_step=step, close=False)

    def _real_gates(self, batch: FoodBatch, device: torch.device
                    ) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``{layer: (gates (N, E), real-token mask (N,), task index (N,))}`` for layers with gates from ``batch``.

        Without ``input_ids`` (a batch of questions only) every routed token counts as real; without ``tasks``
        (one per row) no token has a task.
        """
        input_ids = batch.input_ids
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() < 2:
            self._warn_once("no_input_ids", "RouterSparsityMonitor: the batch has no (batch, sequence) input_ids; "
                                            "every routed token is counted and no task heatmap is made.")
            input_ids = None
        found = {}
        per_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, layer in self._layers.items():
            gates = layer.last_gates
            if gates is None:
                continue
            if input_ids is None:
                tokens = gates.shape[0]
                found[name] = (gates, torch.ones(tokens, dtype=torch.bool, device=gates.device),
                               torch.full((tokens,), -1, dtype=torch.long, device=gates.device))
                continue
            rows, length = input_ids.shape[:2]
            if gates.shape[0] != rows * length:
                self._warn_once(f"shape_{name}", f"RouterSparsityMonitor: layer {name} routed {gates.shape[0]} "
                                                 f"tokens but the batch has {rows} x {length}; it is skipped.")
                continue
            if gates.device not in per_device:
                per_device[gates.device] = self._token_mask_and_tasks(batch, rows, length, gates.device)
            found[name] = (gates, *per_device[gates.device])
        return found

    def _token_mask_and_tasks(self, batch: FoodBatch, rows: int, length: int, device: torch.device
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = batch.attention_mask
        mask = (torch.ones(rows * length, dtype=torch.bool, device=device) if mask is None
                else mask.to(device=device, dtype=torch.bool).reshape(-1))
        task_index = {task: index for index, task in enumerate(self.tasks)}
        batch_tasks = list(batch.tasks or [])
        if len(batch_tasks) != rows:
            batch_tasks = [None] * rows
        unknown = sorted({str(task) for task in batch_tasks if task is not None and task not in task_index})
        if unknown:
            self._warn_once(f"tasks_{unknown}", f"RouterSparsityMonitor: tasks {unknown} are not among "
                                                f"{list(self.tasks)}; they get no heatmap.")
        per_row = torch.tensor([task_index.get(task, -1) for task in batch_tasks], dtype=torch.long, device=device)
        return mask, per_row.unsqueeze(1).expand(rows, length).reshape(-1)

    @staticmethod
    def _real_values(found, device: torch.device) -> torch.Tensor:
        """The gate values of real tokens, flat (empty where the layer has no gates from this batch)."""
        if found is None:
            return torch.zeros(0, device=device)
        gates, mask, _ = found
        return gates.to(device)[mask].reshape(-1).float()

    def _reduced_ranges(self, trainer, layer_gates, names, device, dtype) -> list[tuple[float, float]]:
        """The global ``(min, max)`` gate of every layer over all processes (``min > max`` where there are none)."""
        extremes = torch.full((2 * len(names),), float("-inf"), dtype=dtype, device=device)
        for index, name in enumerate(names):
            values = self._real_values(layer_gates.get(name), device)
            if values.numel():
                extremes[2 * index] = values.max()
                extremes[2 * index + 1] = -values.min()
        extremes = trainer.strategy.reduce(extremes, reduce_op="max").cpu()
        return [(-float(extremes[2 * i + 1]), float(extremes[2 * i])) for i in range(len(names))]

    def heatmap_figure(self, statistics: dict[str, GateStatistics], task_index: int, task: str, step: int):
        """Layers (rows) x experts (columns) mean gate over one task's tokens, as a matplotlib figure (Agg)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        names = list(statistics)
        width = max(stats.num_experts for stats in statistics.values())
        values = torch.full((len(names), width), float("nan"), dtype=torch.float64)
        for row, name in enumerate(names):
            stats = statistics[name]
            if stats.task_tokens[task_index] > 0:
                values[row, :stats.num_experts] = stats.task_mean_gate[task_index]
        figure = Figure(figsize=(1.6 + 0.7 * width, 1.4 + 0.28 * len(names)), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        image = axes.imshow(values.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
        figure.colorbar(image, ax=axes, label="mean gate")
        ranks = self._expert_ranks()
        axes.set_xticks(range(width), [f"{i}\nr={ranks[i]}" if ranks else str(i) for i in range(width)],
                       fontsize=7)
        axes.set_yticks(range(len(names)), names, fontsize=7)
        axes.set_xlabel("expert")
        axes.set_title(f"{task}: mean gate, step {step}", fontsize=9)
        if len(names) * width <= 256:
            low, high = image.get_clim()
            middle = (low + high) / 2
            for row in range(len(names)):
                for column in range(width):
                    value = float(values[row, column])
                    if value == value:  # not NaN
                        axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=5,
                                  color="black" if value > middle else "white")
        figure.tight_layout()
        return figure

    def _expert_ranks(self) -> list[int] | None:
        """The experts' ranks, when every layer has the same ones (they label the heatmap's columns)."""
        return self._expert_ranks_of(self._layers)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)
