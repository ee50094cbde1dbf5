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

        ``gates`` has the leading shape of ``x`` and one column per expert.
        """
        column_gates = gates.index_select(-1, self.expert_of_column) * self.column_scaling
        hidden = self.dropout(matmul_input(x, self.lora_A)) @ self.lora_A.t()
        return (hidden * column_gates.to(hidden.dtype)) @ self.lora_B.t()

    def forward_top1(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The mixture when each token has one non-zero gate: only that expert is computed for that token.

        Tokens are grouped by their expert, so each expert runs one matmul pair on its own tokens and the total
        cost stays that of a single LoRA of one expert's rank (LLaVA-MoLE Eq. 6).
        """
        flat = self.dropout(matmul_input(x, self.lora_A)).reshape(-1, x.shape[-1])
        flat_gates = gates.reshape(-1, gates.shape[-1])
        chosen = flat_gates.abs().argmax(dim=-1)
        weight = flat_gates.gather(1, chosen.unsqueeze(1)).to(flat.dtype)
        order = torch.argsort(chosen)
        counts = torch.bincount(chosen, minlength=self.num_experts).tolist()
        # index_select rather than fancy indexing or index_add, both ways: its backward is an index_add of the
        # gradient, and it saves only the indices for backward (index_add keeps a token-by-output-wide tensor).
        grouped_x = flat.index_select(0, order)
        grouped_weight = weight.index_select(0, order)
        outputs, start = [], 0
        for index, count in enumerate(counts):
            if count:
                a, b = self.expert(index)
                rows = slice(start, start + count)
                # The gate scales the rank-wide activation, not the output: the same product, but backward then
                # keeps `rank` numbers per token for the gate's gradient instead of `out_features`.
                outputs.append(((grouped_x[rows] @ a.t()) * (grouped_weight[rows] * self.scaling[index])) @ b.t())
            start += count
        if not outputs:
            return flat.new_zeros(*x.shape[:-1], self.lora_B.shape[0])
        restore = torch.empty_like(order)
        restore[order] = torch.arange(order.numel(), device=order.device)
        out = torch.cat(outputs).index_select(0, restore)
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def reference_forward(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The same mixture computed expert by expert; slow, for tests and benchmarks."""
        x = self.dropout(matmul_input(x, self.lora_A))
        out = 0
        for index, scaling in enumerate(self.scaling):
            a, b = self.expert(index)
            out = out + gates[..., index:index + 1].to(x.dtype) * scaling * ((x @ a.t()) @ b.t())
        return out
