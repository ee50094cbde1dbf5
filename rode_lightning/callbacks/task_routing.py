"""Which experts each task uses, counted over the tokens where tasks differ, and whether the difference is more than
chance (the question behind the RoDE paper's Figure 6).

Averaged over every token of a conversation, the gates of different tasks look alike: the image tokens and the
prompt's template are shared by all tasks and outnumber the answer. So the gates are collected per sample and per
*kind* of token:

* ``answer``: positions holding a reference-answer token in the teacher-forced forward (``FoodBatch.answer_mask``);
* ``image``: positions holding an image token (``FoodBatch.image_mask``);
* ``generated``: the positions that produced each generated token (``model/generation.py``'s gate recorder), the
  routing behind the model's own answer;
* ``all``: every real token, as the split-wide heatmaps of ``router_heatmaps.py`` count them.

A ReLU router's gates are not a distribution: each token's gates are divided by their sum before averaging (the
expert *shares* of that token; for top-1 routing a one-hot vector, so the mean is the selection frequency). A token
whose gates are all zero uses no expert; it is left out of the shares and counted (``silent_tokens``).

Per layer, the tasks' mean share distributions ``P_k`` are compared by the generalised Jensen-Shannon divergence
with equal task weights, ``H(mean_k P_k) - mean_k H(P_k)`` in bits: 0 when every task routes alike, at most
``log2 K``. Tasks with few samples give noisy ``P_k`` and so a divergence above zero even when routing ignores the
task; the permutation baseline measures that: the task labels are shuffled across samples (a sample's tokens move
together, the task sizes stay), ``draws`` times from a seeded generator, and a layer's routing is said to differ by
task when its divergence exceeds the draws' 95th percentile.

Everything here is plain tensors: one row of sums per sample, gathered across processes before the summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS: tuple[str, ...] = ("answer", "image", "generated", "all")
PERMUTATION_DRAWS = 200
BASELINE_QUANTILE = 0.95


def expert_shares(gates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shares, active)``: each token's gates divided by their sum (``(..., E)``, zeros where the sum is zero) and
    whether the token has any positive gate (``(...)``)."""
    gates = gates.to(torch.float64)
    total = gates.sum(dim=-1, keepdim=True)
    active = total.squeeze(-1) > 0
    shares = torch.where(active.unsqueeze(-1), gates / torch.where(total > 0, total, torch.ones_like(total)),
                         torch.zeros_like(gates))
    return shares, active


@dataclass
class KindSums:
    """Per sample (first dimension ``N``) and adapted layer ``L``, the sums of one kind of token.

    Attributes:
        tokens: ``(N,)`` tokens of the kind.
        active: ``(N, L)`` tokens with at least one positive gate.
        zero_gates: ``(N, L)`` (token, expert) gates equal to zero.
        gate_sum: ``(N, L, E)`` sum of the raw gates.
        share_sum: ``(N, L, E)`` sum of the per-token shares (over active tokens).
    """

    tokens: torch.Tensor
    active: torch.Tensor
    zero_gates: torch.Tensor
    gate_sum: torch.Tensor
    share_sum: torch.Tensor

    @staticmethod
    def width(layers: int, experts: int) -> int:
        return 1 + 2 * layers + 2 * layers * experts

    def to_matrix(self) -> torch.Tensor:
        n = self.tokens.shape[0]
        return torch.cat([self.tokens.reshape(n, 1), self.active, self.zero_gates, self.gate_sum.reshape(n, -1),
                          self.share_sum.reshape(n, -1)], dim=1)

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor, layers: int, experts: int) -> "KindSums":
        n = matrix.shape[0]
        parts = torch.split(matrix, [1, layers, layers, layers * experts, layers * experts], dim=1)
        return cls(parts[0].reshape(n), parts[1], parts[2], parts[3].reshape(n, layers, experts),
                   parts[4].reshape(n, layers, experts))


def kind_sums(per_layer: list[torch.Tensor], positions: torch.Tensor) -> KindSums:
    """The sums of the tokens at ``positions`` (``(N, T)``, true where the token is of the kind) from each layer's
    gates ``(N, T, E)``."""
    keep = positions.to(torch.bool)
    weight = keep.to(torch.float64)
    active, zeros, gate_sums, share_sums = [], [], [], []
    for gates in per_layer:
        gates = gates.to(torch.float64)
        shares, is_active = expert_shares(gates)
        active.append((is_active & keep).sum(dim=1).to(torch.float64))
        zeros.append(((gates == 0) & keep.unsqueeze(-1)).sum(dim=(1, 2)).to(torch.float64))
        gate_sums.append((gates * weight.unsqueeze(-1)).sum(dim=1))
        share_sums.append((shares * weight.unsqueeze(-1)).sum(dim=1))
    return KindSums(weight.sum(dim=1), torch.stack(active, dim=1), torch.stack(zeros, dim=1),
                    torch.stack(gate_sums, dim=1), torch.stack(share_sums, dim=1))


def _entropy_bits(distribution: torch.Tensor) -> torch.Tensor:
    """Entropy over the last dimension, in bits, with 0 log 0 = 0."""
    logs = torch.where(distribution > 0, torch.log2(torch.where(distribution > 0, distribution,
                                                                 torch.ones_like(distribution))),
                       torch.zeros_like(distribution))
    return -(distribution * logs).sum(dim=-1)


def task_divergence(share_sum: torch.Tensor, active: torch.Tensor, labels: torch.Tensor, num_tasks: int
                    ) -> torch.Tensor:
    """Per layer, the Jensen-Shannon divergence (bits, equal weights) between the tasks' mean share distributions.

    Args:
        share_sum: ``(N, L, E)`` per-sample share sums; ``active``: ``(N, L)`` per-sample active tokens.
        labels: ``(N,)`` or ``(D, N)`` task index of each sample (``D`` labellings at once), -1 for none.
    Returns:
        ``(L,)`` or ``(D, L)``; NaN for a layer where fewer than two tasks have tokens.
    """
    single = labels.dim() == 1
    labels = labels.reshape(-1, labels.shape[-1])
    onehot = torch.nn.functional.one_hot(labels.clamp_min(0), num_tasks).to(torch.float64)
    onehot = onehot * (labels >= 0).unsqueeze(-1).to(torch.float64)  # (D, N, K)
    sums = torch.einsum("dnk,nle->dkle", onehot, share_sum.to(torch.float64))
    counts = torch.einsum("dnk,nl->dkl", onehot, active.to(torch.float64))
    present = counts > 0  # (D, K, L)
    means = sums / torch.where(present, counts, torch.ones_like(counts)).unsqueeze(-1)
    weights = present.to(torch.float64) / present.sum(dim=1, keepdim=True).clamp_min(1)
    mixture = (weights.unsqueeze(-1) * means).sum(dim=1)  # (D, L, E)
    divergence = _entropy_bits(mixture) - (weights * _entropy_bits(means)).sum(dim=1)
    divergence = torch.where(present.sum(dim=1) >= 2, divergence.clamp_min(0.0),
                             torch.full_like(divergence, math.nan))
    return divergence[0] if single else divergence


def permutation_divergences(share_sum: torch.Tensor, active: torch.Tensor, labels: torch.Tensor, num_tasks: int,
                            draws: int = PERMUTATION_DRAWS, seed: int = 0) -> torch.Tensor:
    """``(draws, L)``: the divergence with the task labels shuffled across the labelled samples, from a generator
    seeded with ``seed`` (the same seed gives the same draws)."""
    generator = torch.Generator().manual_seed(seed)
    labelled = torch.nonzero(labels >= 0).reshape(-1)
    shuffled = labels.unsqueeze(0).repeat(draws, 1)
    for draw in range(draws):
        order = labelled[torch.randperm(len(labelled), generator=generator)]
        shuffled[draw, labelled] = labels[order]
    return task_divergence(share_sum, active, shuffled, num_tasks)


def divergence_summary(sums: KindSums, labels: torch.Tensor, num_tasks: int, draws: int = PERMUTATION_DRAWS,
                       seed: int = 0) -> dict:
    """The observed divergence per layer beside its permutation baseline (mean and 95th percentile)."""
    observed = task_divergence(sums.share_sum, sums.active, labels, num_tasks)
    baseline = permutation_divergences(sums.share_sum, sums.active, labels, num_tasks, draws, seed)
    high = torch.nanquantile(baseline, BASELINE_QUANTILE, dim=0) if draws else torch.full_like(observed, math.nan)
    mean = baseline.nanmean(dim=0) if draws else torch.full_like(observed, math.nan)
    exceeds = [bool(o > h) if not (math.isnan(o) or math.isnan(h)) else False
               for o, h in zip(observed.tolist(), high.tolist())]
    # p-value with the observed labelling counted among the draws, so it is never 0
    p_values = [(1 + int((baseline[:, layer] >= observed[layer]).sum())) / (1 + draws)
                if not math.isnan(float(observed[layer])) else math.nan for layer in range(observed.shape[0])]
    return {"divergence": _plain(observed), "baseline_mean": _plain(mean), "baseline_95": _plain(high),
            "exceeds": exceeds, "p_value": p_values, "draws": draws, "seed": seed,
            "samples": int((labels >= 0).sum())}


def _plain(values: torch.Tensor) -> list[float | None]:
    """JSON-ready: NaN as None."""
    return [None if math.isnan(v) else v for v in values.tolist()]


class TaskRouting:
    """Per-sample sums of every kind of token over an evaluation split (:func:`kind_sums`), with each sample's task
    and dataset, and their summary: per kind and group the mean gate, the mean share and the sparsity, and per kind
    the task divergence beside its permutation baseline."""

    def __init__(self, layers: list[str], experts: int, tasks: list[str], datasets: list[str]):
        self.layers = list(layers)
        self.experts = experts
        self.tasks = list(tasks)
        self.datasets = list(datasets)
        self._rows: list[torch.Tensor] = []

    @property
    def row_width(self) -> int:
        return 2 + len(KINDS) * KindSums.width(len(self.layers), self.experts)

    def add(self, sums: dict[str, KindSums], tasks: list[str | None], datasets: list[str]) -> None:
        """One batch: ``sums`` per kind (a kind left out counts no tokens), each row's task and dataset."""
        n = len(tasks)
        empty = KindSums.width(len(self.layers), self.experts)
        columns = [torch.tensor([self.tasks.index(t) if t in self.tasks else -1 for t in tasks], dtype=torch.float64
                                ).reshape(n, 1),
                   torch.tensor([self.datasets.index(d) if d in self.datasets else -1 for d in datasets],
                                dtype=torch.float64).reshape(n, 1)]
        for kind in KINDS:
            columns.append(sums[kind].to_matrix() if kind in sums else torch.zeros(n, empty, dtype=torch.float64))
        self._rows.append(torch.cat(columns, dim=1))

    def matrix(self) -> torch.Tensor:
        """``(N, row_width)``: every sample's row (gathered across processes by the caller)."""
        return torch.cat(self._rows) if self._rows else torch.zeros(0, self.row_width, dtype=torch.float64)

    def summary(self, matrix: torch.Tensor | None = None, draws: int = PERMUTATION_DRAWS, seed: int = 0) -> dict:
        """``{kind: {"groups": {group: {...}}, "task_divergence": {...}}}`` for the kinds with tokens."""
        matrix = self.matrix() if matrix is None else matrix
        tasks, datasets = matrix[:, 0].long(), matrix[:, 1].long()
        width = KindSums.width(len(self.layers), self.experts)
        result = {}
        for index, kind in enumerate(KINDS):
            block = matrix[:, 2 + index * width: 2 + (index + 1) * width]
            sums = KindSums.from_matrix(block, len(self.layers), self.experts)
            if float(sums.tokens.sum()) <= 0:
                continue
            groups = {}
            for names, labels in ((self.tasks, tasks), (self.datasets, datasets)):
                for position, name in enumerate(names):
                    chosen = labels == position
                    group = _group_summary(sums, chosen, self.experts)
                    if group is not None:
                        groups[name] = group
            result[kind] = {"groups": groups,
                            "task_divergence": divergence_summary(sums, tasks, len(self.tasks), draws, seed)}
        return result


def _group_summary(sums: KindSums, chosen: torch.Tensor, experts: int) -> dict | None:
    tokens = float(sums.tokens[chosen].sum())
    if tokens <= 0:
        return None
    active = sums.active[chosen].sum(dim=0)  # (L,)
    share = sums.share_sum[chosen].sum(dim=0) / torch.where(active > 0, active, torch.ones_like(active)).unsqueeze(-1)
    share = torch.where((active > 0).unsqueeze(-1), share, torch.full_like(share, math.nan))
    return {"samples": int(chosen.sum()), "tokens": int(tokens),
            "silent_tokens": [int(tokens - a) for a in active.tolist()],
            "sparsity": float(sums.zero_gates[chosen].sum()) / (tokens * sums.active.shape[1] * experts),
            "mean_gate": (sums.gate_sum[chosen].sum(dim=0) / tokens).tolist(),
            "mean_share": [_plain(row) for row in share]}
