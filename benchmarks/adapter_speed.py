"""Forward + backward time of one adapted linear layer, every adapter side by side, as ratios.

    python benchmarks/adapter_speed.py [--tokens 4096] [--dim 1024] [--rounds 15] [--device cuda]

The machine is noisy, so absolute times mean little: every variant is timed once per round, round after round,
and the median per variant is compared with peft's LoRA measured in the same rounds. The input requires grad, as
the input of an attention projection does in a model with adapters below it. The last line of output is one JSON
object with every ratio and parameter count, for other scripts to check.

Targets (see README.md), on the whole adapted layer: fused RoDE [2, 4, 8, 16] within 1.15x of a peft LoRA of rank 30
(same parameters); top-1 over four rank-8 experts within 1.3x of a peft LoRA of rank 8. The `*_adapter_only` ratios
subtract the frozen base layer's time from both sides, comparing the adapters' own work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.inject import inject_adapters
from rode_lightning.adapters.layer import MixtureOfLoRALinear


class OneLayer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
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


def peft_lora(dim: int, rank: int) -> nn.Module:
    model = OneLayer(dim)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=16, lora_dropout=0.0, target_modules=["proj"]), model)
    return model


def mixture(dim: int, method: str, ranks: list[int], batch: int) -> nn.Module:
    model = OneLayer(dim)
    context = RoutingContext()
    config = AdapterConfig(method=method, ranks=ranks, dropout=0.0, target_modules=["proj"], num_clusters=4)
    inject_adapters(model, config, context, cluster_dim=64 if method == "cluster" else None)
    if method == "cluster":
        context.cluster_features = torch.randn(batch, 64)
    for parameter in model.parameters():
        if parameter.requires_grad:
            nn.init.normal_(parameter, std=0.02)  # trained-like values, B included
    return model


def build_variants(dim: int, batch: int) -> dict[str, nn.Module]:
    """Every compared layer, by name; the reference loop runs the fused RoDE layer's own weights."""
    rode = mixture(dim, "rode", [2, 4, 8, 16], batch)
    return {
        "base_only": OneLayer(dim),
        "peft_lora_r8": peft_lora(dim, 8),
        "peft_lora_r30": peft_lora(dim, 30),
        "peft_lora_r32": peft_lora(dim, 32),
        "rode_2_4_8_16": rode,
        "rode_2_4_8_16_reference_loop": ReferenceLoop(rode.proj),
        "softmax_8x4": mixture(dim, "softmax", [8, 8, 8, 8], batch),
        "top1_8x4": mixture(dim, "top1", [8, 8, 8, 8], batch),
        "cluster_8x4": mixture(dim, "cluster", [8, 8, 8, 8], batch),
    }


def trainable(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def step_time(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x).sum().backward()
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
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp32 either way)")
    args = parser.parse_args()
    torch.manual_seed(0)

    variants = build_variants(args.dim, args.batch)
    for model in variants.values():
        model.to(args.device)
    context = getattr(variants["cluster_8x4"].proj.router, "context", None)
    if context is not None and context.cluster_features is not None:
        context.cluster_features = context.cluster_features.to(args.device)
    rode = variants["rode_2_4_8_16"]
    x = torch.randn(args.batch, args.tokens // args.batch, args.dim, device=args.device, requires_grad=True)
    for model in variants.values():  # warm-up
        model.train()
        step_time(model, x)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, model in variants.items():
            times[name].append(step_time(model, x))
    median = {name: statistics.median(values) for name, values in times.items()}

    print(f"forward+backward, {args.tokens} tokens, d={args.dim}, median of {args.rounds} interleaved rounds, "
          f"{torch.get_num_threads()} threads, {args.device}")
    print(f"{'variant':32s} {'ms':>8s} {'trainable':>10s}")
    for name, model in variants.items():
        count = trainable(model) if name != "rode_2_4_8_16_reference_loop" else trainable(rode)
        print(f"{name:32s} {1000 * median[name]:8.2f} {count:10d}")
    ratios = {
        "rode_2_4_8_16_vs_peft_lora_r30": median["rode_2_4_8_16"] / median["peft_lora_r30"],
        "rode_reference_loop_vs_fused": median["rode_2_4_8_16_reference_loop"] / median["rode_2_4_8_16"],
        "top1_8x4_vs_peft_lora_r8": median["top1_8x4"] / median["peft_lora_r8"],
        "softmax_8x4_vs_peft_lora_r32": median["softmax_8x4"] / median["peft_lora_r32"],
        "cluster_8x4_vs_peft_lora_r32": median["cluster_8x4"] / median["peft_lora_r32"],
    }
    # The adapter's own share: the frozen base layer's time taken out of both sides. Stricter than the layer
    # ratios above, which are what a training step feels.
    adapter_only = {f"{name}_adapter_only": (median[a] - median["base_only"]) / (median[b] - median["base_only"])
                    for name, (a, b) in {"rode_2_4_8_16_vs_peft_lora_r30": ("rode_2_4_8_16", "peft_lora_r30"),
                                         "top1_8x4_vs_peft_lora_r8": ("top1_8x4", "peft_lora_r8")}.items()}
    ratios.update(adapter_only)
    targets = {"rode_2_4_8_16_vs_peft_lora_r30": 1.15, "top1_8x4_vs_peft_lora_r8": 1.3}
    for name, value in ratios.items():
        target = f" (target <= {targets[name]}: {'met' if value <= targets[name] else 'MISSED'})" \
            if name in targets else ""
        print(f"{name:40s} {value:6.3f}{target}")
    result = {"tokens": args.tokens, "dim": args.dim, "rounds": args.rounds, "device": args.device,
              "ratios": {name: round(value, 4) for name, value in ratios.items()},
              "median_ms": {name: round(1000 * value, 3) for name, value in median.items()},
              "trainable_parameters": {name: trainable(model) for name, model in variants.items()
                                       if name != "rode_2_4_8_16_reference_loop"}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
