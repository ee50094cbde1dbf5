"""Figure 6 of the RoDE paper done over a whole evaluation split: which experts each task and each dataset uses.

:class:`EvaluationRouting` accumulates, per group (each task and each dataset of the split) and per adapted layer,
the sums and counts of the gates over the real tokens of every evaluation batch (a teacher-forced forward of the
question and reference answer, the tokens the loss is computed on), so the heatmap describes the split, not one
batch. :func:`router_heatmap_figure` draws every group on one colour scale, so that tasks can be compared cell by
cell. The statistics are plain sums, reduced across processes before they are divided.
"""

from __future__ import annotations

import math

import torch

from rode_lightning.callbacks.gate_statistics import GateStatistics, gate_statistics
from rode_lightning.conventions import TASKS


class EvaluationRouting:
    """Sums of gates per (group, layer) over an evaluation split; ``groups`` are task and dataset names."""

    def __init__(self, layers: dict[str, int], groups: list[str], dtype: torch.dtype = torch.float64):
        self.layers = layers  # short layer name -> experts
        self.groups = list(groups)
        self.dtype = dtype
        self.statistics: dict[str, dict[str, GateStatistics]] = {}
        self.reset()

    def reset(self) -> None:
        self.statistics = {group: {name: gate_statistics(torch.zeros(0, experts), dtype=self.dtype)
                                   for name, experts in self.layers.items()} for group in self.groups}

    def add(self, layer_gates: dict[str, torch.Tensor], attention_mask: torch.Tensor, row_groups: list[list[str]]
            ) -> None:
        """``layer_gates``: layer -> ``(rows * length, E)`` gates of one forward; ``row_groups``: the groups of
        each row (its task and its dataset)."""
        rows, length = attention_mask.shape
        mask = attention_mask.bool().cpu()
        for group in self.groups:
            in_group = torch.tensor([group in groups for groups in row_groups], dtype=torch.bool)
            if not in_group.any():
                continue
            keep = (mask & in_group.unsqueeze(1)).reshape(-1)
            for name, gates in layer_gates.items():
                self.statistics[group][name] = self.statistics[group][name] + gate_statistics(
                    gates.cpu(), keep, dtype=self.dtype)

    def to_vector(self) -> torch.Tensor:
        return torch.cat([self.statistics[g][n].to_vector() for g in self.groups for n in self.layers])

    def load_vector(self, vector: torch.Tensor) -> None:
        offset = 0
        for group in self.groups:
            for name, experts in self.layers.items():
                size = GateStatistics.vector_size(experts, 0)
                self.statistics[group][name] = GateStatistics.from_vector(vector[offset:offset + size], experts, 0)
                offset += size

    def as_dict(self, ranks: list[int] | None = None) -> dict:
        """``{"layers", "ranks", "groups": {group: {"tokens", "sparsity", "mean_gate": [layer][expert]}}}`` for the
        groups that had tokens; sparsity is the fraction of zero gates over all layers and tokens of the group."""
        groups = {}
        for group in self.groups:
            per_layer = self.statistics[group]
            tokens = float(next(iter(per_layer.values())).tokens) if per_layer else 0.0
            if tokens <= 0:
                continue
            zeros = sum(float(stats.zero_gates) for stats in per_layer.values())
            slots = sum(float(stats.tokens) * stats.num_experts for stats in per_layer.values())
            groups[group] = {"tokens": int(tokens), "sparsity": zeros / slots,
                             "mean_gate": [stats.mean_gate.tolist() for stats in per_layer.values()]}
        return {"layers": list(self.layers), "ranks": ranks, "groups": groups}


def router_heatmap_figure(router: dict, title: str):
    """Layers x experts mean gate, one panel per group, all on one colour scale (0 to the largest mean gate)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = router["groups"]
    layers = router["layers"]
    high = max((max(max(row) for row in group["mean_gate"]) for group in groups.values()), default=1.0) or 1.0
    figure = Figure(figsize=(1.4 + 2.2 * max(1, len(groups)), 1.4 + 0.2 * len(layers)), dpi=110)
    FigureCanvasAgg(figure)
    image = None
    ranks = router.get("ranks")
    for index, (name, group) in enumerate(groups.items()):
        axes = figure.add_subplot(1, len(groups), index + 1)
        image = axes.imshow(group["mean_gate"], aspect="auto", cmap="viridis", vmin=0.0, vmax=high,
                            interpolation="nearest")
        experts = len(group["mean_gate"][0])
        axes.set_xticks(range(experts), [f"r{ranks[i]}" if ranks and i < len(ranks) else str(i)
                                         for i in range(experts)], fontsize=7)
        axes.set_yticks(range(len(layers)), layers if index == 0 else [""] * len(layers), fontsize=6)
        axes.set_xlabel("expert (rank)", fontsize=8)
        if index == 0:
            axes.set_ylabel("adapted layer", fontsize=8)
        axes.set_title(f"{name}\nsparsity {group['sparsity']:.2f}", fontsize=8)
    if image is not None:
        figure.colorbar(image, ax=figure.axes, label="mean gate (shared scale)", shrink=0.9)
    figure.suptitle(title, fontsize=9, y=1.06)  # above the two-line panel titles
    return figure


def task_routing_figure(router: dict, title: str):
    """One row per kind of token (``router["kinds"]``): each task's mean expert shares (layers x experts, one scale
    from 0 to the largest share for every panel), and a last panel with the task divergence per layer (bars, orange where it exceeds
    the permutation baseline) beside the baseline's 95th percentile (black ticks)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kinds = router["kinds"]
    layers = router["layers"]
    ranks = router.get("ranks")
    tasks = [task for task in TASKS
             if any(task in kind["groups"] for kind in kinds.values())]
    columns = len(tasks) + 1
    high = max((value for kind in kinds.values() for group in kind["groups"].values() for layer in group["mean_share"]
                for value in layer if value is not None), default=1.0) or 1.0
    figure = Figure(figsize=(1.6 + 2.0 * columns, 0.9 + (0.8 + 0.17 * len(layers)) * len(kinds)), dpi=110)
    FigureCanvasAgg(figure)
    image = None
    for row, (kind, values) in enumerate(kinds.items()):
        for column, task in enumerate(tasks):
            axes = figure.add_subplot(len(kinds), columns, row * columns + column + 1)
            group = values["groups"].get(task)
            if group is None:
                axes.axis("off")
                continue
            shares = [[math.nan if v is None else v for v in layer] for layer in group["mean_share"]]
            image = axes.imshow(shares, aspect="auto", cmap="viridis", vmin=0.0, vmax=high, interpolation="nearest")
            experts = len(shares[0])
            axes.set_xticks(range(experts), [f"r{ranks[i]}" if ranks and i < len(ranks) else str(i)
                                             for i in range(experts)], fontsize=6)
            axes.set_yticks(range(len(layers)), layers if column == 0 else [""] * len(layers), fontsize=5)
            axes.set_title(f"{kind} tokens: {task}" if column == 0 else task, fontsize=7)
        divergence = values["task_divergence"]
        axes = figure.add_subplot(len(kinds), columns, row * columns + columns)
        observed = [math.nan if v is None else v for v in divergence["divergence"]]
        baseline = [math.nan if v is None else v for v in divergence["baseline_95"]]
        axes.barh(range(len(layers)), observed, color=["tab:orange" if e else "tab:gray"
                                                       for e in divergence["exceeds"]])
        axes.scatter(baseline, range(len(layers)), marker="|", color="black", s=60, zorder=3)
        axes.set_yticks(range(len(layers)), [""] * len(layers))
        axes.invert_yaxis()
        axes.tick_params(axis="x", labelsize=6)
        axes.set_title(f"task JSD (bits), {sum(divergence['exceeds'])}/{len(layers)} > baseline", fontsize=7)
    if image is not None:
        figure.colorbar(image, ax=figure.axes, label="mean expert share (gates / their sum; shared scale)", shrink=0.6)
    figure.suptitle(title, fontsize=9)
    return figure
