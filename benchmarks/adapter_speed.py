"""Forward + backward time of one adapted linear layer, every adapter side by side, as ratios.

    python benchmarks/adapter_speed.py [--tokens 4096] [--dim 1024] [--rounds 15] [--device cuda] [--dtype bfloat16]

The machine is noisy, so absolute times mean little: every variant is timed once per round, the order alternating,
and each ratio is the median over rounds of that round's ratio (``paired.py``). The input requires grad, as
the input of an attention projection does in a model with adapters below it. The last line of output is one JSON
object with every ratio and parameter count, for other scripts to check.

Targets (``TARGETS_AT_MOST``; README.md), on the whole adapted layer: fused RoDE [2, 4, 8, 16] within 1.15x of a
peft LoRA of rank 30 (same parameters); top-1 over four rank-8 experts within 1.3x of a peft LoRA of rank 8. The
``*_adapter_only`` ratios subtract the frozen base layer's time from both sides, comparing the adapters' own work
(targets 1.05 and 1.15).

``--dtype bfloat16`` runs as ``trainer.precision: bf16-mixed`` trains the paper's model: a bf16 frozen layer and
input, fp32 adapters, every step under bf16 autocast. That is where top-1 over equal ranks runs grouped by expert on a
GPU with a grouped GEMM kernel (``LoRAExperts.groups_tokens``); ``top1_8x4_dense`` is the same layer held to the
dense product, and ``top1_grouped_vs_dense`` compares the two (1.0 up to noise where both run dense, as on the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import time

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from paired import paired_excess_ratio, paired_ratio, repeats_for, timed_rounds
from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.inject import inject_adapters
from rode_lightning.adapters.layer import MixtureOfLoRALinear


# issue 14's targets, at most: on the whole adapted layer, and on the adapters' own work (``*_adapter_only``)
TARGETS_AT_MOST = {"rode_2_4_8_16_vs_peft_lora_r30": 1.15, "top1_8x4_vs_peft_lora_r8": 1.3,
                   "rode_2_4_8_16_vs_peft_lora_r30_adapter_only": 1.05, "top1_8x4_vs_peft_lora_r8_adapter_only": 1.15}


class OneLayer(nn.Module):
    def __init__(self, dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.proj = nn.Linear(dim, dim, dtype=dtype)
        self.proj.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ReferenceLoop(nn.Module):
    """The same RoDE layer, run expert by expert (what a straightforward implementation does)."""

    def __init__(self, layer: MixtureOfLoRALinear):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.base(x) + self.layer.experts.reference_forward(x, self.layer.router(x))


def peft_lora(dim: int, rank: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    model = OneLayer(dim, dtype)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=16, lora_dropout=0.0, target_modules=["proj"]), model)
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.data = parameter.data.float()  # fp32 adapters over a bf16 base, as peft's get_peft_model casts
    return model


def mixture(dim: int, method: str, ranks: list[int], batch: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    model = OneLayer(dim, dtype)
    context = RoutingContext()
    config = AdapterConfig(method=method, ranks=ranks, dropout=0.0, target_modules=["proj"], num_clusters=4)
    inject_adapters(model, config, context, cluster_dim=64 if method == "cluster" else None)
    if method == "cluster":
        context.cluster_features = torch.randn(batch, 64)
    for parameter in model.parameters():
        if parameter.requires_grad:
            nn.init.normal_(parameter, std=0.02)  # trained-like values, B included
    return model


def build_variants(dim: int, batch: int, dtype: torch.dtype = torch.float32) -> dict[str, nn.Module]:
    """Every compared layer, by name; the reference loop runs the fused RoDE layer's own weights, and the dense
    top-1 copy the grouped-capable layer's."""
    rode = mixture(dim, "rode", [2, 4, 8, 16], batch, dtype)
    top1 = mixture(dim, "top1", [8, 8, 8, 8], batch, dtype)
    top1_dense = copy.deepcopy(top1)
    top1_dense.proj.experts.allow_grouped = False
    return {
        "base_only": OneLayer(dim, dtype),
        "peft_lora_r8": peft_lora(dim, 8, dtype),
        "peft_lora_r30": peft_lora(dim, 30, dtype),
        "peft_lora_r32": peft_lora(dim, 32, dtype),
        "rode_2_4_8_16": rode,
        "rode_2_4_8_16_reference_loop": ReferenceLoop(rode.proj),
        "softmax_8x4": mixture(dim, "softmax", [8, 8, 8, 8], batch, dtype),
        "top1_8x4": top1,
        "top1_8x4_dense": top1_dense,
        "cluster_8x4": mixture(dim, "cluster", [8, 8, 8, 8], batch, dtype),
    }


def trainable(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def step_time(model: nn.Module, x: torch.Tensor) -> float:
    autocast = (torch.autocast(x.device.type, dtype=x.dtype) if x.dtype != torch.float32
                else contextlib.nullcontext())
    start = time.perf_counter()
    with autocast:
        loss = model(x).float().sum()
    loss.backward()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    x.grad = None
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=4, help="samples the tokens belong to (cluster routing)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="of the frozen layer and the input; bfloat16 runs under autocast (bf16-mixed)")
    parser.add_argument("--min-sample-seconds", type=float, default=0.3,
                        help="each timing repeats a variant's step until it lasts this long; 0: one call")
    args = parser.parse_args()
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)

    variants = build_variants(args.dim, args.batch, dtype)
    for model in variants.values():
        model.to(args.device)
    context = getattr(variants["cluster_8x4"].proj.router, "context", None)
    if context is not None and context.cluster_features is not None:
        context.cluster_features = context.cluster_features.to(args.device)
    rode = variants["rode_2_4_8_16"]
    x = torch.randn(args.batch, args.tokens // args.batch, args.dim, device=args.device, dtype=dtype,
                    requires_grad=True)
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
        top1_grouped = variants["top1_8x4"].proj.experts.groups_tokens(x)
    for model in variants.values():  # warm-up
        model.train()
        step_time(model, x)
    repeats = repeats_for(step_time(variants["base_only"], x), args.min_sample_seconds)
    times = timed_rounds(list(variants), args.rounds, lambda name: step_time(variants[name], x), repeats)
    median = {name: statistics.median(values) for name, values in times.items()}

    print(f"forward+backward, {args.tokens} tokens, d={args.dim}, {args.dtype}, median of {args.rounds} interleaved "
          f"rounds (each timing the mean of {repeats} calls), {torch.get_num_threads()} threads, {args.device}; "
          f"top-1 runs "
          f"{'grouped by expert' if top1_grouped else 'dense'}")
    print(f"{'variant':32s} {'ms':>8s} {'trainable':>10s}")
    for name, model in variants.items():
        count = trainable(model) if name != "rode_2_4_8_16_reference_loop" else trainable(rode)
        print(f"{name:32s} {1000 * median[name]:8.2f} {count:10d}")
    pairs = {"rode_2_4_8_16_vs_peft_lora_r30": ("rode_2_4_8_16", "peft_lora_r30"),
             "rode_reference_loop_vs_fused": ("rode_2_4_8_16_reference_loop", "rode_2_4_8_16"),
             "top1_8x4_vs_peft_lora_r8": ("top1_8x4", "peft_lora_r8"),
             "softmax_8x4_vs_peft_lora_r32": ("softmax_8x4", "peft_lora_r32"),
             "cluster_8x4_vs_peft_lora_r32": ("cluster_8x4", "peft_lora_r32"),
             "top1_grouped_vs_dense": ("top1_8x4", "top1_8x4_dense")}
    ratios = {name: paired_ratio(times[a], times[b]) for name, (a, b) in pairs.items()}
    # The adapter's own share: the frozen base layer's time taken out of both sides. Stricter than the layer
    # ratios above, which are what a training step feels.
    adapter_only = {f"{name}_adapter_only": paired_excess_ratio(times[pairs[name][0]], times[pairs[name][1]],
                                                                times["base_only"])
                    for name in ("rode_2_4_8_16_vs_peft_lora_r30", "top1_8x4_vs_peft_lora_r8")}
    ratios.update(adapter_only)
    for name, value in ratios.items():
        target = TARGETS_AT_MOST.get(name)
        target = f" (target <= {target}: {'met' if value <= target else 'MISSED'})" if target else ""
        print(f"{name:40s} {value:6.3f}{target}")
    result = {"tokens": args.tokens, "dim": args.dim, "rounds": args.rounds, "repeats": repeats,
              "device": args.device,
              "dtype": args.dtype, "top1_grouped": top1_grouped,
              "ratios": {name: round(value, 4) for name, value in ratios.items()},
              "median_ms": {name: round(1000 * value, 3) for name, value in median.items()},
              "trainable_parameters": {name: trainable(model) for name, model in variants.items()
                                       if name != "rode_2_4_8_16_reference_loop"}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
