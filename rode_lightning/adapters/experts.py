"""LoRA experts of different ranks, executed as one fused low-rank product.

A mixture of N LoRA experts computes ``sum_i g_i * (alpha / r_i) * B_i A_i x``. Looping over experts costs N small
matmul pairs and N intermediate tensors. Because every expert reads the same ``x`` and writes the same output, the
experts can be stacked: ``A = [A_1; ...; A_N]`` is ``(sum r) x d_in`` and ``B = [B_1, ..., B_N]`` is
``d_out x (sum r)``. The gate of expert i and its scaling ``alpha / r_i`` are then a per-column weight on the
``(tokens, sum r)`` intermediate, so the whole mixture is two matmuls, the cost of one LoRA of rank ``sum r``.
That is what makes RoDE's diverse ranks cheap: a ``[2, 4, 8, 16]`` mixture costs what a rank-30 LoRA costs.

A router that gives each token one expert (top-1) runs through the same dense product, its other gates zero. On a
GPU whose grouped GEMM kernel PyTorch ships (``torch.nn.functional.grouped_mm``: CUDA compute capability 9 or 10,
bf16), equal-rank experts instead run grouped: tokens sorted by expert, each expert's ``A`` and ``B`` applied to its
own tokens only, with no host synchronisation (:meth:`LoRAExperts.forward_grouped`). Everywhere else grouped_mm
falls back to a loop that reads the group offsets back to the host, so the dense product stays the portable path.

:meth:`LoRAExperts.reference_forward` keeps the plain per-expert loop so tests can check both paths.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from rode_lightning.adapters.precision import matmul_dtype, matmul_input
from rode_lightning.adapters.routers import Router
from rode_lightning.compat import grouped_mm
from rode_lightning.dtensors import is_dtensor

_GROUPED_MM = grouped_mm()  # torch.nn.functional.grouped_mm, or torch._grouped_mm before it was public


@functools.lru_cache(maxsize=None)
def _has_grouped_kernel(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] in (9, 10)


def grouped_kernel_serves(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``grouped_mm`` runs PyTorch's fused grouped GEMM for these operands: bf16 on a CUDA device of compute
    capability 9.x or 10.x (H100, H200, B200). Elsewhere it loops over the groups after copying their offsets to
    the host, a synchronisation in every adapted layer."""
    if _GROUPED_MM is None or device.type != "cuda" or dtype != torch.bfloat16:
        return False
    return _has_grouped_kernel(device.index if device.index is not None else torch.cuda.current_device())


class LoRAExperts(nn.Module):
    allow_grouped = True  # False: one-expert-per-token routing always runs the dense product (benchmarks compare)

    def __init__(self, in_features: int, out_features: int, ranks: list[int], alpha: float, dropout: float = 0.0):
        super().__init__()
        self.ranks = tuple(int(rank) for rank in ranks)
        self.alpha = float(alpha)
        total_rank = sum(self.ranks)
        self.lora_A = nn.Parameter(torch.empty(total_rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, total_rank))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # (experts, total rank): row i holds alpha / r_i on expert i's columns, zero elsewhere, so ``gates @ it``
        # spreads each expert's gate, scaled, over its columns in one small matmul (a gather and a multiply cost
        # several times more on CPU, in backward too). Exact: each output is one product plus zeros. A constant
        # derived from the ranks, not state: non-persistent, so checkpoints and DDP broadcasts skip it.
        expansion = torch.zeros(self.num_experts, total_rank)
        start = 0
        for expert, (rank, scaling) in enumerate(zip(self.ranks, self.scaling)):
            expansion[expert, start:start + rank] = scaling
            start += rank
        self.register_buffer("gate_expansion", expansion, persistent=False)
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

    def forward(self, x: torch.Tensor, gates: torch.Tensor, one_expert_per_token: bool = False) -> torch.Tensor:
        """``sum_i gates[..., i] * alpha / r_i * B_i A_i dropout(x)`` with two matmuls.

        ``gates`` has the leading shape of ``x`` and one column per expert. Top-1 routing
        (``one_expert_per_token``) runs here too: its gates are zero but for each token's chosen expert, so the
        other experts' columns contribute nothing and get zero gradients, exactly as if only the chosen expert ran.
        Computing every expert's rank-wide columns costs what one LoRA of the summed rank costs, which at these
        ranks is the cost of reading ``x`` once (the matmuls are memory-bound); grouping tokens by expert costs a
        sorted copy of ``x`` and pays off only with a grouped GEMM kernel (:meth:`groups_tokens`).
        """
        if one_expert_per_token and self.groups_tokens(x):
            return self.forward_grouped(x, gates)
        return self.combine(self.dropout(matmul_input(x, self.lora_A)) @ self.lora_A.t(), gates)

    def groups_tokens(self, x: torch.Tensor) -> bool:
        """Whether one-expert-per-token routing of ``x`` runs :meth:`forward_grouped`: experts of one rank, every
        width a multiple of 8 (grouped_mm wants 16-byte strides, 8 bf16 numbers) and a grouped GEMM kernel for the
        matmul dtype."""
        rank = self.ranks[0]
        widths = (rank, self.lora_A.shape[1], self.lora_B.shape[0])
        return (self.allow_grouped and all(r == rank for r in self.ranks) and all(w % 8 == 0 for w in widths)
                and grouped_kernel_serves(x.device, matmul_dtype(x, self.lora_A)))

    def forward_grouped(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The mixture when each token has one non-zero gate and all experts one rank, with ``grouped_mm``: tokens
        sorted by their expert, each expert's ``A`` then ``B`` applied to its own rows (LLaVA-MoLE Eq. 6: one
        expert's cost per token). Group offsets are computed on the device, so nothing waits for the host. Runs
        anywhere ``grouped_mm`` does (tests run it on the CPU); :meth:`forward` chooses it only where it is fast.
        """
        experts, rank, dtype = self.num_experts, self.ranks[0], matmul_dtype(x, self.lora_A)
        flat = self.dropout(matmul_input(x, self.lora_A)).reshape(-1, x.shape[-1])
        flat_gates = gates.reshape(-1, experts)
        chosen = flat_gates.abs().argmax(dim=-1)
        gate = flat_gates.gather(1, chosen.unsqueeze(1)) * self.scaling[0]  # equal ranks: one alpha / r
        order = torch.argsort(chosen, stable=True)
        tokens_per_expert = torch.zeros(experts, dtype=torch.int32, device=x.device).scatter_add_(
            0, chosen, torch.ones_like(chosen, dtype=torch.int32))
        offsets = tokens_per_expert.cumsum(0, dtype=torch.int32)
        # (experts, d_in, rank) and (experts, rank, d_out): each expert's matrices transposed, as grouped_mm takes
        # them; B is copied into that layout (d_out x rank per expert, small) so every stride is the kernel's.
        a = self.lora_A.to(dtype).view(experts, rank, -1).transpose(1, 2)
        b = self.lora_B.to(dtype).view(-1, experts, rank).permute(1, 0, 2).contiguous().transpose(1, 2)
        with torch.autocast(x.device.type, enabled=False):
            hidden = _GROUPED_MM(flat.index_select(0, order).to(dtype), a, offs=offsets)
            hidden = hidden * gate.index_select(0, order).to(dtype)
            out = _GROUPED_MM(hidden, b, offs=offsets)
        restore = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
        return out.index_select(0, restore).reshape(*x.shape[:-1], out.shape[-1])

    def forward_routed(self, x: torch.Tensor, router: Router) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixture and its gates with the token router's linear map stacked under ``A``: one matmul of
        ``[A; W_router]`` reads ``x`` once for the experts' rank-wide activation and the router's logits (forward
        and backward), where two matmuls would read it twice. Valid only where both read the same ``x``, that is
        without active dropout (:meth:`MixtureOfLoRALinear._router_folds_into_experts`).

        A method of the experts, not of the layer: under FSDP2 the experts and the router are one unit
        (``rode_lightning/scale/sharding.py``) and this method is registered as its forward, so both weights are
        gathered while it runs.
        """
        weight = self.lora_A
        if is_dtensor(weight) or is_dtensor(router.linear.weight):
            raise RuntimeError("the router folds into the experts' matmul only when both are gathered: shard them "
                               "as one FSDP unit with forward_routed registered (rode_lightning.scale.sharding)")
        stacked = torch.cat([weight, router.linear.weight])
        hidden, logits = (matmul_input(x, stacked) @ stacked.t()).split(
            [weight.shape[0], router.linear.weight.shape[0]], dim=-1)
        gates = router.gates_from_logits(logits)
        return self.combine(hidden, gates), gates

    def combine(self, hidden: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The second half of :meth:`forward`: the rank-wide activation ``A dropout(x)`` (every expert's columns)
        weighted by each column's expert gate and ``alpha / r_i``, through ``B``."""
        return (hidden * self.column_gates(gates).to(hidden.dtype)) @ self.lora_B.t()

    def column_gates(self, gates: torch.Tensor) -> torch.Tensor:
        """``(..., experts)`` gates to ``(..., total rank)``: column ``c`` of expert ``i`` gets ``gates[..., i] *
        alpha / r_i``, computed in the expansion's dtype (fp32 under autocast too, as the product of a gate and its
        scaling always was)."""
        expansion = self.gate_expansion
        if torch.is_autocast_enabled(gates.device.type):  # entering the context costs more than this tiny matmul
            with torch.autocast(gates.device.type, enabled=False):
                return gates.to(expansion.dtype) @ expansion
        return gates.to(expansion.dtype) @ expansion

    def reference_forward(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The same mixture computed expert by expert; slow, for tests and benchmarks."""
        x = self.dropout(matmul_input(x, self.lora_A))
        out = 0
        for index, scaling in enumerate(self.scaling):
            a, b = self.expert(index)
            out = out + gates[..., index:index + 1].to(x.dtype) * scaling * ((x @ a.t()) @ b.t())
        return out
