"""LoRA experts of different ranks, executed as one fused low-rank product.

A mixture of N LoRA experts computes ``sum_i g_i * (alpha / r_i) * B_i A_i x``. Looping over experts costs N small
matmul pairs and N intermediate tensors. Because every expert reads the same ``x`` and writes the same output, the
experts can be stacked: ``A = [A_1; ...; A_N]`` is ``(sum r) x d_in`` and ``B = [B_1, ..., B_N]`` is
``d_out x (sum r)``. The gate of expert i and its scaling ``alpha / r_i`` are then a per-column weight on the
``(tokens, sum r)`` intermediate, so the whole mixture is two matmuls, the cost of one LoRA of rank ``sum r``.
That is what makes RoDE's diverse ranks cheap: a ``[2, 4, 8, 16]`` mixture costs what a rank-30 LoRA costs.

:meth:`LoRAExperts.reference_forward` keeps the plain per-expert loop so tests can check the fused path.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rode_lightning.adapters.precision import matmul_input


class LoRAExperts(nn.Module):
    def __init__(self, in_features: int, out_features: int, ranks: list[int], alpha: float, dropout: float = 0.0):
        super().__init__()
        self.ranks = tuple(int(rank) for rank in ranks)
        self.alpha = float(alpha)
        total_rank = sum(self.ranks)
        self.lora_A = nn.Parameter(torch.empty(total_rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, total_rank))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        expert_of_column = [expert for expert, rank in enumerate(self.ranks) for _ in range(rank)]
        # Constants derived from the ranks, not state: non-persistent so checkpoints and DDP broadcasts skip them.
        self.register_buffer("expert_of_column", torch.tensor(expert_of_column), persistent=False)
        self.register_buffer("column_scaling", torch.tensor([self.scaling[e] for e in expert_of_column]),
                             persistent=False)
        self.reset_parameters()

    @property
    def num_experts(self) -> int:
        return len(self.ranks)

    @property
    def scaling(self) -> list[float]:
        """``alpha / r_i`` for every expert."""
        return [self.alpha / rank for rank in self.ranks]

    def reset_parameters(self) -> None:
        # As LoRA does: A Kaiming-uniform per expert, B zero, so the adapted layer starts equal to the base layer.
        for a, _ in self._slices():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def _slices(self):
        start = 0
        for rank in self.ranks:
            yield self.lora_A.data[start:start + rank], self.lora_B.data[:, start:start + rank]
            start += rank

    def expert(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A_i, B_i)`` of expert ``index``: views of shape ``r_i x d_in`` and ``d_out x r_i``."""
        start = sum(self.ranks[:index])
        rank = self.ranks[index]
        return self.lora_A[start:start + rank], self.lora_B[:, start:start + rank]

    def forward(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """``sum_i gates[..., i] * alpha / r_i * B_i A_i dropout(x)`` with two matmuls.

        ``gates`` has the leading shape of ``x`` and one column per expert. Top-1 routing runs here too: its gates
        are zero but for each token's chosen expert, so the other experts' columns contribute nothing and get zero
        gradients, exactly as if only the chosen expert ran. Computing every expert's rank-wide columns costs what
        one LoRA of the summed rank costs, which at these ranks is the cost of reading ``x`` once (the matmuls are
        memory-bound); grouping tokens by expert instead cost a sorted copy of ``x``, a host synchronisation for
        the group sizes in every layer and a graph break (measured slower on the CPU; README, Results).
        """
        return self.combine(self.dropout(matmul_input(x, self.lora_A)) @ self.lora_A.t(), gates)

    def combine(self, hidden: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The second half of :meth:`forward`: the rank-wide activation ``A dropout(x)`` (every expert's columns)
        weighted by each column's expert gate and ``alpha / r_i``, through ``B``."""
        column_gates = gates.index_select(-1, self.expert_of_column) * self.column_scaling
        return (hidden * column_gates.to(hidden.dtype)) @ self.lora_B.t()

    def reference_forward(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The same mixture computed expert by expert; slow, for tests and benchmarks."""
        x = self.dropout(matmul_input(x, self.lora_A))
        out = 0
        for index, scaling in enumerate(self.scaling):
            a, b = self.expert(index)
            out = out + gates[..., index:index + 1].to(x.dtype) * scaling * ((x @ a.t()) @ b.t())
        return out
