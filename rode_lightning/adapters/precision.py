"""The dtype an adapter's input is used in, with and without mixed precision.

The frozen model runs in bf16 (``model.language.dtype``) while adapters and routers keep fp32 weights, so a layer
input ``x`` arrives in bf16 and meets fp32 weights. Without autocast the matmul needs one dtype, so ``x`` is cast
up. Under autocast (``trainer.precision: bf16-mixed``) the matmul casts its operands itself, and it would cast an
upcast ``x`` straight back down: that round trip computes nothing, yet the fp32 copy and the new bf16 copy are
separate tensors, and autograd keeps the bf16 one (and dropout's mask in fp32) for backward. Counted with
``saved_tensors_hooks`` (tests/test_estimate.py), RoDE adapters on q and k kept four input-sized copies per token
where the shared input alone suffices.
"""

from __future__ import annotations

import torch


def matmul_input(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x`` as the matmul with ``weight`` should receive it: unchanged under autocast or when the dtypes agree,
    else cast to the weight's dtype."""
    if x.dtype == weight.dtype or torch.is_autocast_enabled(x.device.type):
        return x
    return x.to(weight.dtype)


def matmul_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype a matmul of ``x`` with ``weight`` computes in: autocast's where it is on for ``x``'s device, else
    the weight's (which :func:`matmul_input` casts ``x`` to)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return weight.dtype
