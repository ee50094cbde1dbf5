"""Whole-model cost of every adapter, side by side, as ratios: a training step, greedy generation and the
activations kept for backward.

    python benchmarks/model_step.py [--shape demo wide] [--rounds 7] [--device cpu]

A transformers model per shape, text only (``demo``: the demo base's recipe; ``wide``: 1024 wide, 4 blocks;
``paper``: 4096 wide, LLaMA-7B's block, 2 blocks, for a GPU; ``tiny``: for the tests, all LLaMA;
``qwen2_5_vl``: a ``Qwen2_5_VLForConditionalGeneration`` with Qwen2.5-VL-7B's language-model proportions at 1024
wide, 4 blocks: grouped-query attention with 8 query heads per key/value head, biased q/k/v, the MLP 5.3x wide,
multimodal rotary positions, run through the VL model's own forward and ``generate``), frozen, with adapters on
``q_proj`` and ``k_proj`` as configs/rode.yaml has them (dropout 0.05 in training). Every method is compared with a
plain peft LoRA of the same trainable parameters (RoDE ``[2, 4, 8, 16]`` with r30, top-1 over four rank-8 experts
with r8, the dense mixtures of four rank-8 experts with r32) and with the frozen model without adapters:

* **training step**: forward, loss, backward and an AdamW step; the input embeddings require grad, as the input of
  the first block does under a trained projector, so the frozen model's step is its forward and backward through
  the activations. ``*_adapter_only`` ratios subtract the frozen model's step from both sides: the adapters' own
  work;
* **generation**: tokens per second of greedy ``generate`` with the KV cache, a batch of prompts as ``validate``
  decodes them, adapters unmerged;
* **saved for backward**: bytes of the distinct tensors autograd keeps in one training forward, parameters left out
  (exact, so one measurement suffices); on CUDA also the peak memory of a step.

The machine is noisy: every variant is timed once per round, the order alternating, and each ratio is the median
over rounds of that round's ratio (``paired.py``). The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from adapter_memory import saved_activation_bytes
from paired import paired_excess_ratio, paired_ratio, repeats_for, timed_rounds
from rode_lightning.adapters import AdapterConfig, add_adapters, routing_context

TARGETS = ["q_proj", "k_proj"]
CLUSTER_WIDTH = 64
VOCABULARY = 8192

# name -> (method, ranks); None: the frozen model without adapters
VARIANTS: dict[str, tuple[str, list[int]] | None] = {
    "frozen": None,
    "lora_r8": ("lora", [8]),
    "lora_r30": ("lora", [30]),
    "lora_r32": ("lora", [32]),
    "rode_2_4_8_16": ("rode", [2, 4, 8, 16]),
    "top1_8x4": ("top1", [8, 8, 8, 8]),
    "softmax_8x4": ("softmax", [8, 8, 8, 8]),
    "cluster_8x4": ("cluster", [8, 8, 8, 8]),
}
PAIRS = {"rode_2_4_8_16_vs_lora_r30": ("rode_2_4_8_16", "lora_r30"), "top1_8x4_vs_lora_r8": ("top1_8x4", "lora_r8"),
         "softmax_8x4_vs_lora_r32": ("softmax_8x4", "lora_r32"), "cluster_8x4_vs_lora_r32": ("cluster_8x4", "lora_r32")}
# issue 14's targets: step and adapter-only ratios at most, generation tokens/s ratios at least, saved bytes at most
TARGETS_AT_MOST = {"step": {"rode_2_4_8_16_vs_lora_r30": 1.05, "top1_8x4_vs_lora_r8": 1.10},
                   "step_adapter_only": {"rode_2_4_8_16_vs_lora_r30": 1.05, "top1_8x4_vs_lora_r8": 1.15},
                   "saved_bytes": {"top1_8x4_vs_lora_r8": 1.3}}
TARGETS_AT_LEAST = {"generation_tokens_per_second": {"rode_2_4_8_16_vs_lora_r30": 0.95, "top1_8x4_vs_lora_r8": 0.9}}


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    blocks: int
    heads: int
    family: str = "llama"
    kv_heads: int | None = None  # grouped-query attention; None: as many as heads


def shapes() -> dict[str, Shape]:
    from rode_lightning.pretrain.recipe import BaseRecipe

    recipe = BaseRecipe()
    return {"tiny": Shape(32, 64, 2, 4), "demo": Shape(recipe.hidden_size, recipe.intermediate_size, recipe.layers,
                                                        recipe.heads),
            "wide": Shape(1024, 2752, 4, 16), "paper": Shape(4096, 11008, 2, 32),
            # Qwen2.5-VL-7B's language model is 3584 wide, MLP 18944 (5.29x), 28 query heads over 4 key/value heads.
            "qwen2_5_vl": Shape(1024, 5376, 4, 16, family="qwen2_5_vl", kv_heads=2)}


def frozen_model(shape: Shape) -> nn.Module:
    if shape.family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        half_head = shape.hidden // shape.heads // 2
        # Qwen's split of the rotary frequencies over time, height and width (16, 24, 24 of 64), scaled.
        sections = [half_head // 4, 3 * half_head // 8, half_head - half_head // 4 - 3 * half_head // 8]
        text = dict(vocab_size=VOCABULARY, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                    num_hidden_layers=shape.blocks, num_attention_heads=shape.heads,
                    num_key_value_heads=shape.kv_heads, max_position_embeddings=1024,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": sections})
        vision = dict(depth=1, hidden_size=64, out_hidden_size=shape.hidden, num_heads=2, intermediate_size=128)
        return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                                                   tie_word_embeddings=False))
    config = LlamaConfig(vocab_size=VOCABULARY, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.blocks, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads or shape.heads, max_position_embeddings=1024,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config)


def build(shape: Shape, variant: tuple[str, list[int]] | None, batch: int, device: str) -> nn.Module:
    torch.manual_seed(0)  # the same frozen weights for every variant
    model = frozen_model(shape).to(device)
    model.requires_grad_(False)
    if variant is None:
        return model
    method, ranks = variant  # `lora` is peft's own LoRA layer, as in training
    config = AdapterConfig(method=method, ranks=ranks, target_modules=TARGETS, num_clusters=4)
    # In the language model only, as model.adapter.scope's default (a VL model's vision tower is left alone).
    add_adapters(model.get_decoder(), config,
                 cluster_dim=CLUSTER_WIDTH if config.adapter_method.needs_cluster_features else None)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                nn.init.normal_(parameter, std=0.02)  # trained-like values, B included
    if config.adapter_method.needs_cluster_features:
        routing_context(model).cluster_features = torch.randn(batch, CLUSTER_WIDTH, device=device)
    return model


class Step:
    """One training step of ``model`` on a fixed batch: forward, loss, backward, AdamW."""

    def __init__(self, model: LlamaForCausalLM, tokens: torch.Tensor):
        self.model, self.tokens = model, tokens
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-4) if trainable else None

    def embeddings(self) -> torch.Tensor:
        return self.model.get_input_embeddings()(self.tokens).detach().requires_grad_(True)

    def __call__(self) -> None:
        context = routing_context(self.model)
        if context is not None:
            context.token_mask = torch.ones_like(self.tokens, dtype=torch.bool)
        logits = self.model(inputs_embeds=self.embeddings(), use_cache=False).logits
        loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), self.tokens[:, 1:].flatten())
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


class Forward(nn.Module):
    """The training forward as one module call, for :func:`saved_activation_bytes`."""

    def __init__(self, model: LlamaForCausalLM):
        super().__init__()
        self.model = model

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.model(inputs_embeds=embeddings, use_cache=False).logits


def generation_seconds(model: LlamaForCausalLM, prompts: torch.Tensor, new_tokens: int) -> float:
    model.eval()
    context = routing_context(model)
    if context is not None:
        context.token_mask = None
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
    _synchronize(prompts.device)
    model.train()
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step: Step) -> float:
    start = time.perf_counter()
    step()
    _synchronize(step.tokens.device)
    return time.perf_counter() - start


def measure(shape_name: str, shape: Shape, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, VOCABULARY, (args.batch, args.length), generator=generator).to(device)
    prompts = torch.randint(1, VOCABULARY, (args.generate_batch, args.prompt_length), generator=generator).to(device)
    steps, generation_models = {}, {}
    for name, variant in VARIANTS.items():
        steps[name] = Step(build(shape, variant, args.batch, args.device), tokens)
        generation_models[name] = build(shape, variant, args.generate_batch, args.device)
    saved = {}
    for name, step in steps.items():
        step.model.train()
        saved[name] = saved_activation_bytes(Forward(step.model), step.embeddings())
    peak = {}
    for name, step in steps.items():  # warm-up (and the peak memory of a step, on CUDA)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        timed(step)
        generation_seconds(generation_models[name], prompts, 2)
        if device.type == "cuda":
            peak[name] = torch.cuda.max_memory_allocated()
    names = list(VARIANTS)
    # Calls per timing, from the frozen model's (the fastest) second call: the demo's 0.1 s steps are repeated.
    step_repeats = repeats_for(timed(steps["frozen"]), args.min_sample_seconds)
    generation_repeats = repeats_for(generation_seconds(generation_models["frozen"], prompts, args.new_tokens),
                                     args.min_sample_seconds)
    step_times = timed_rounds(names, args.rounds, lambda name: timed(steps[name]), step_repeats)
    generation_times = timed_rounds(names, args.rounds, lambda name: generation_seconds(
        generation_models[name], prompts, args.new_tokens), generation_repeats)
    step_median = {name: statistics.median(values) for name, values in step_times.items()}
    tokens_per_second = {name: args.generate_batch * args.new_tokens / statistics.median(values)
                         for name, values in generation_times.items()}
    frozen = step_times["frozen"]
    # Tokens per second is the inverse of seconds per generation: its ratio a / b is b's seconds over a's.
    ratios = {
        "step": {pair: paired_ratio(step_times[a], step_times[b]) for pair, (a, b) in PAIRS.items()},
        "step_adapter_only": {pair: paired_excess_ratio(step_times[a], step_times[b], frozen)
                              for pair, (a, b) in PAIRS.items()},
        "step_vs_frozen": {name: paired_ratio(step_times[name], frozen) for name in VARIANTS if name != "frozen"},
        "generation_tokens_per_second": {pair: paired_ratio(generation_times[b], generation_times[a])
                                         for pair, (a, b) in PAIRS.items()},
        "generation_vs_frozen": {name: paired_ratio(generation_times["frozen"], generation_times[name])
                                 for name in VARIANTS if name != "frozen"},
        "saved_bytes": {pair: saved[a] / saved[b] for pair, (a, b) in PAIRS.items()},
    }
    trainable = {name: sum(p.numel() for p in step.model.parameters() if p.requires_grad)
                 for name, step in steps.items()}
    repeats = {"step": step_repeats, "generation": generation_repeats}
    _print_table(shape_name, shape, args, repeats, step_median, tokens_per_second, saved, trainable, ratios)
    result = {"shape": vars(shape) | {"vocabulary": VOCABULARY}, "rounds": args.rounds, "repeats": repeats,
              "train_batch": [args.batch, args.length], "generate_batch": [args.generate_batch, args.prompt_length,
                                                                            args.new_tokens],
              "step_median_ms": {name: round(1000 * value, 3) for name, value in step_median.items()},
              "generation_tokens_per_second": {name: round(value, 2) for name, value in tokens_per_second.items()},
              "saved_bytes": saved, "trainable_parameters": trainable,
              "ratios": {group: {name: round(value, 4) for name, value in values.items()}
                         for group, values in ratios.items()}}
    if peak:
        result["peak_memory_bytes"] = peak
    return result


def _verdict(group: str, pair: str, value: float) -> str:
    if pair in TARGETS_AT_MOST.get(group, {}):
        target = TARGETS_AT_MOST[group][pair]
        return f"target <= {target}: {'met' if value <= target else 'MISSED'}"
    if pair in TARGETS_AT_LEAST.get(group, {}):
        target = TARGETS_AT_LEAST[group][pair]
        return f"target >= {target}: {'met' if value >= target else 'MISSED'}"
    return ""


def _print_table(shape_name, shape, args, repeats, step_median, tokens_per_second, saved, trainable, ratios
                 ) -> None:
    family = "LLaMA" if shape.family == "llama" else f"{shape.family} (text only, {shape.kv_heads} key/value heads)"
    print(f"\n{shape_name}: {family} {shape.blocks} blocks x {shape.hidden} wide (MLP {shape.intermediate}), "
          f"vocabulary {VOCABULARY}, adapters on {', '.join(TARGETS)}; step: batch {args.batch} x {args.length} "
          f"tokens + AdamW; generation: {args.generate_batch} prompts x {args.prompt_length} tokens, "
          f"{args.new_tokens} new; median of {args.rounds} interleaved rounds, each timing the mean of "
          f"{repeats['step']} steps and {repeats['generation']} generations, {torch.get_num_threads()} threads, "
          f"{args.device}")
    print(f"{'variant':16s} {'trainable':>10s} {'step ms':>9s} {'gen tok/s':>10s} {'saved MiB':>10s}")
    for name in VARIANTS:
        print(f"{name:16s} {trainable[name]:10,d} {1000 * step_median[name]:9.2f} {tokens_per_second[name]:10.1f} "
              f"{saved[name] / 2**20:10.2f}")
    for group in ("step", "step_adapter_only", "generation_tokens_per_second", "saved_bytes"):
        for pair, value in ratios[group].items():
            print(f"{group + ': ' + pair:58s} {value:6.3f}  {_verdict(group, pair, value)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs="+", default=["demo", "wide"], choices=sorted(shapes()))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8, help="training samples per step")
    parser.add_argument("--length", type=int, default=128, help="tokens per training sample")
    parser.add_argument("--generate-batch", type=int, default=16, help="prompts decoded together")
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--min-sample-seconds", type=float, default=0.5,
                        help="each timing repeats a step (a generation) until it lasts this long; 0: one call")
    args = parser.parse_args()
    results = {name: measure(name, shapes()[name], args) for name in args.shape}
    print(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "shapes": results}))


if __name__ == "__main__":
    main()
