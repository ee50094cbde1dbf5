"""Activation memory of one adapted linear layer, every adapter side by side, as ratios.

    python benchmarks/adapter_memory.py [--tokens 4096] [--dim 1024]

What a training step keeps per layer between forward and backward is the tensors autograd saves for backward. This
script counts them exactly, on any device: a ``saved_tensors_hooks`` pair sees every tensor saved during one forward,
and the bytes of their distinct storages are summed, leaving out the parameters (they are there anyway). Unlike
timings this does not depend on the machine's load, so one run suffices. Same layers and input as
``adapter_speed.py`` (the input requires grad; dropout off). The last line is one JSON object.

The question it answers: does RoDE's fused execution of experts of different ranks keep the activations of one LoRA
with their total rank (``[2, 4, 8, 16]`` vs r30), while a loop over experts keeps one set per expert; and what the
routers' gates add.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from adapter_speed import build_variants


def saved_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct tensor storages autograd saves in one forward of ``model`` on ``x``, parameters left
    out. Views of one storage count once (autograd often saves an input and a view of it)."""
    parameter_storages = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(x)
    del output
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4, help="samples the tokens belong to (cluster routing)")
    args = parser.parse_args()
    torch.manual_seed(0)

    variants = build_variants(args.dim, args.batch)
    x = torch.randn(args.batch, args.tokens // args.batch, args.dim, requires_grad=True)
    saved = {}
    for name, model in variants.items():
        model.train()
        saved[name] = saved_activation_bytes(model, x)
    # The frozen base layer saves nothing but its weight (the input's gradient needs only W0), so whatever a
    # variant saves is its adapter's: at least the layer input, which the first adapter matmul needs.
    token_bytes = args.tokens * x.element_size()

    print(f"tensors saved for backward, {args.tokens} tokens, d={args.dim}, fp32")
    print(f"{'variant':32s} {'MiB':>8s} {'floats per token':>17s}")
    for name in variants:
        print(f"{name:32s} {saved[name] / 2**20:8.2f} {saved[name] / token_bytes:17.1f}")
    pairs = {"rode_2_4_8_16_vs_peft_lora_r30": ("rode_2_4_8_16", "peft_lora_r30"),
             "rode_reference_loop_vs_fused": ("rode_2_4_8_16_reference_loop", "rode_2_4_8_16"),
             "top1_8x4_vs_peft_lora_r8": ("top1_8x4", "peft_lora_r8"),
             "softmax_8x4_vs_peft_lora_r32": ("softmax_8x4", "peft_lora_r32"),
             "cluster_8x4_vs_peft_lora_r32": ("cluster_8x4", "peft_lora_r32")}
    ratios = {name: saved[a] / saved[b] for name, (a, b) in pairs.items()}
    for name, value in ratios.items():
        print(f"{name:48s} {value:6.3f}")
    print(json.dumps({"tokens": args.tokens, "dim": args.dim, "saved_bytes": saved,
                      "ratios": {name: round(value, 4) for name, value in ratios.items()}}))


if __name__ == "__main__":
    main()
