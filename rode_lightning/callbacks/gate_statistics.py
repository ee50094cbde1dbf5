"""Sums and counts of router gates over real tokens: the arithmetic behind the router-sparsity scalars, histograms
and heatmaps (``router_sparsity.py``, ``router_heatmaps.py``). Plain tensors in, plain tensors out; the sums add up
across batches and processes before anything is divided.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


HISTOGRAM_BINS = 30


@dataclass
class GateStatistics:
    """Sums and counts of one layer's gates over real tokens; add them across batches or processes, then divide.

    Attributes:
        tokens: ``()`` number of real tokens.
        zero_gates: ``()`` number of (token, expert) gates equal to zero.
        gate_sum: ``(E,)`` sum of each expert's gates.
        active_tokens: ``(E,)`` number of tokens whose gate for the expert is positive.
        task_tokens: ``(K,)`` real tokens of each task.
        task_gate_sum: ``(K, E)`` sum of each expert's gates over each task's tokens.
    """

    tokens: torch.Tensor
    zero_gates: torch.Tensor
    gate_sum: torch.Tensor
    active_tokens: torch.Tensor
    task_tokens: torch.Tensor
    task_gate_sum: torch.Tensor

    @property
    def num_experts(self) -> int:
        return self.gate_sum.shape[0]

    @property
    def num_tasks(self) -> int:
        return self.task_tokens.shape[0]

    @staticmethod
    def vector_size(num_experts: int, num_tasks: int) -> int:
        return 2 + 2 * num_experts + num_tasks + num_tasks * num_experts

    def to_vector(self) -> torch.Tensor:
        """All fields as one flat tensor, so that one collective reduces them all."""
        return torch.cat([self.tokens.reshape(1), self.zero_gates.reshape(1), self.gate_sum, self.active_tokens,
                          self.task_tokens, self.task_gate_sum.reshape(-1)])

    @classmethod
    def from_vector(cls, vector: torch.Tensor, num_experts: int, num_tasks: int) -> "GateStatistics":
        e, k = num_experts, num_tasks
        if vector.numel() != cls.vector_size(e, k):
            raise ValueError(f"expected {cls.vector_size(e, k)} values for {e} experts and {k} tasks, "
                             f"got {vector.numel()}")
        parts = torch.split(vector, [1, 1, e, e, k, k * e])
        return cls(parts[0][0], parts[1][0], parts[2], parts[3], parts[4], parts[5].reshape(k, e))

    def __add__(self, other: "GateStatistics") -> "GateStatistics":
        return GateStatistics.from_vector(self.to_vector() + other.to_vector(), self.num_experts, self.num_tasks)

    # Ratios: NaN where nothing was counted.
    @property
    def sparsity(self) -> torch.Tensor:
        return self.zero_gates / (self.tokens * self.num_experts)

    @property
    def mean_gate(self) -> torch.Tensor:
        return self.gate_sum / self.tokens

    @property
    def token_share(self) -> torch.Tensor:
        return self.active_tokens / self.tokens

    @property
    def task_mean_gate(self) -> torch.Tensor:
        return self.task_gate_sum / self.task_tokens.unsqueeze(-1)


def gate_statistics(gates: torch.Tensor, mask: torch.Tensor | None = None, task_ids: torch.Tensor | None = None,
                    num_tasks: int = 0, dtype: torch.dtype = torch.float64) -> GateStatistics:
    """Sums and counts of ``gates`` over the tokens where ``mask`` is true.

    Args:
        gates: ``(..., E)`` gates, one column per expert (e.g. ``(tokens, E)`` as kept by the layer).
        mask: the leading shape of ``gates`` (or its flattened ``tokens``), true/1 for real tokens; ``None``: all.
        task_ids: same shape as ``mask``, each token's task index in ``[0, num_tasks)``; other values (e.g. -1) are
            left out of the per-task sums only.
        num_tasks: number of tasks ``K``.
        dtype: dtype of the returned sums and counts.
    """
    num_experts = gates.shape[-1]
    gates = gates.reshape(-1, num_experts)
    keep = (torch.ones(gates.shape[0], dtype=torch.bool, device=gates.device) if mask is None
            else mask.reshape(-1).to(device=gates.device, dtype=torch.bool))
    if keep.shape[0] != gates.shape[0]:
        raise ValueError(f"mask covers {keep.shape[0]} tokens but the gates {gates.shape[0]}")
    real = gates[keep].to(dtype)
    task_tokens = torch.zeros(num_tasks, dtype=dtype, device=gates.device)
    task_gate_sum = torch.zeros(num_tasks, num_experts, dtype=dtype, device=gates.device)
    if task_ids is not None and num_tasks:
        tasks = task_ids.reshape(-1).to(device=gates.device, dtype=torch.long)
        if tasks.shape[0] != keep.shape[0]:
            raise ValueError(f"task_ids cover {tasks.shape[0]} tokens but the gates {gates.shape[0]}")
        tasks = tasks[keep]
        known = (tasks >= 0) & (tasks < num_tasks)
        tasks, task_gates = tasks[known], real[known]
        task_tokens.index_add_(0, tasks, torch.ones_like(tasks, dtype=dtype))
        task_gate_sum.index_add_(0, tasks, task_gates)
    return GateStatistics(
        tokens=torch.tensor(real.shape[0], dtype=dtype, device=gates.device),
        zero_gates=(real == 0).sum().to(dtype),
        gate_sum=real.sum(dim=0),
        active_tokens=(real > 0).sum(dim=0).to(dtype),
        task_tokens=task_tokens,
        task_gate_sum=task_gate_sum,
    )


def gate_histogram(values: torch.Tensor, low: float, high: float, bins: int = HISTOGRAM_BINS,
                   dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket counts of ``values`` in ``bins`` equal buckets spanning ``[low, high]`` (``high`` in the last one).

    Returns ``(bucket_right_edges, counts)``. Values outside the range are not counted. With a fixed range the
    counts of several processes add up to the histogram of all their values.
    """
    if not high > low:
        high = low + max(abs(low), 1.0) * 1e-6
    values = values.reshape(-1).to(torch.float64)
    edges = torch.linspace(low, high, bins + 1, dtype=torch.float64, device=values.device)
    inside = values[(values >= low) & (values <= high)]
    index = ((inside - low) / (high - low) * bins).floor().long().clamp_(0, bins - 1)
    counts = torch.bincount(index, minlength=bins).to(dtype)
    return edges[1:], counts
