"""README.md's benchmark figures: measured by the commands shown beside them, kept as their output, rendered here.

    python scripts/benchmark_results.py run      # the CPU benchmarks one after another (about 20 min), then render
    python scripts/benchmark_results.py run model_step_qwen2_5_vl   # only the named ones (others kept), then render
    python scripts/benchmark_results.py render   # README.md's benchmark blocks from results/benchmarks and results/gpu
    python scripts/benchmark_results.py check    # exit 1 if README.md's blocks differ from what render would write

``run`` executes each command of ``COMMANDS`` and keeps its whole output in ``results/benchmarks/NAME.txt`` (the
table a person reads; the last line is the benchmark's JSON), with the commands and library versions in
``results/benchmarks/provenance.json``. Run it on an idle machine: the ratios are of medians measured side by side,
but another heavy process still skews them. GPU figures come from ``bash benchmarks/gpu_check.sh`` (default output
``results/gpu/``); without them the ``gpu`` block says so. The blocks between ``<!-- benchmark-results:NAME -->`` and
``<!-- /benchmark-results -->`` are never typed: ``tests/test_readme_results.py`` fails when they differ.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import readme_blocks  # noqa: E402
from adapter_speed import TARGETS_AT_MOST as LAYER_TARGETS  # noqa: E402
from model_step import TARGETS_AT_LEAST, TARGETS_AT_MOST  # noqa: E402
from serve_load import TARGETS_AT_LEAST as SERVE_TARGETS  # noqa: E402

KIND = "benchmark-results"
RESULTS = REPO / "results" / "benchmarks"
GPU_RESULTS = REPO / "results" / "gpu"
COMMANDS = {
    "adapter_speed": ["benchmarks/adapter_speed.py", "--rounds", "15"],
    "adapter_memory": ["benchmarks/adapter_memory.py"],
    "model_step": ["benchmarks/model_step.py", "--rounds", "7"],
    "model_step_qwen2_5_vl": ["benchmarks/model_step.py", "--shape", "qwen2_5_vl", "--rounds", "7"],
    # needs the demo's two trained adapters (README, "Use a trained model")
    "serve_load": ["benchmarks/serve_load.py"],
}
MEMORY_TARGETS = {"top1_8x4_vs_peft_lora_r8": 1.3}
# ratio name -> what it compares, for the one-layer tables
LAYER_PAIRS = {
    "rode_2_4_8_16_vs_peft_lora_r30": "fused RoDE `[2, 4, 8, 16]` / peft LoRA r30 (same parameters)",
    "rode_reference_loop_vs_fused": "per-expert reference loop / fused RoDE",
    "top1_8x4_vs_peft_lora_r8": "top-1 over 4 x r8 / peft LoRA r8",
    "softmax_8x4_vs_peft_lora_r32": "softmax 4 x r8 / peft LoRA r32",
    "cluster_8x4_vs_peft_lora_r32": "MoCLE cluster 4 x r8 (+ universal r8) / peft LoRA r32",
    "top1_grouped_vs_dense": "top-1 as run / the same layer held to the dense product",
}
MODEL_PAIRS = {"rode_2_4_8_16_vs_lora_r30": "RoDE `[2, 4, 8, 16]` / r30", "top1_8x4_vs_lora_r8": "top-1 4 x r8 / r8",
               "softmax_8x4_vs_lora_r32": "softmax 4 x r8 / r32", "cluster_8x4_vs_lora_r32": "cluster 4 x r8 / r32"}


def last_json(output: str) -> dict:
    """A benchmark's result: the last line of its output."""
    return json.loads(output.strip().splitlines()[-1])


def _command(name: str) -> str:
    return "python " + " ".join(COMMANDS[name])


def run(names: list[str]) -> None:
    """Run the benchmarks ``names`` (all without any) and render; the others' kept outputs stay. The provenance
    record says which library versions measured which benchmark."""
    from rode_lightning.provenance import library_versions

    RESULTS.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(names) - set(COMMANDS))
    if unknown:
        sys.exit(f"unknown benchmark(s) {unknown}; known: {sorted(COMMANDS)}")
    for name, arguments in COMMANDS.items():
        if names and name not in names:
            continue
        print(f"$ {_command(name)}", flush=True)
        completed = subprocess.run([sys.executable, *arguments], cwd=REPO, capture_output=True, text=True)
        if completed.returncode != 0:
            sys.exit(f"{_command(name)} failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}")
        last_json(completed.stdout)  # a benchmark that does not end with its JSON is not kept
        (RESULTS / f"{name}.txt").write_text(completed.stdout)
    import platform

    import torch

    record = {"commands": {name: _command(name) for name in COMMANDS}, "versions": library_versions(),
              "platform": platform.platform(), "threads": torch.get_num_threads()}
    provenance = RESULTS / "provenance.json"
    if names and provenance.is_file():  # a partial run: the others were measured as recorded before
        previous = json.loads(provenance.read_text())
        if previous.get("versions") != record["versions"]:
            print("note: the library versions differ from those of the benchmarks not rerun", file=sys.stderr)
        record = {**previous, "commands": record["commands"]}
    provenance.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    readme_blocks.render(KIND, blocks)


def _verdict(value: float | None, at_most: float | None = None, at_least: float | None = None) -> str:
    if value is None:
        return ""
    if at_most is not None:
        return f"{value:.2f} (<= {at_most} {'met' if value <= at_most else 'missed'})"
    if at_least is not None:
        return f"{value:.2f} (>= {at_least} {'met' if value >= at_least else 'missed'})"
    return f"{value:.2f}"


def layer_speed_table(result: dict) -> str:
    """adapter_speed.py's ratios: the whole layer and, for RoDE and top-1, the adapters' own work."""
    ratios = result["ratios"]
    lines = ["| comparison | whole layer | adapter work alone |", "| --- | --- | --- |"]
    for pair, label in LAYER_PAIRS.items():
        if pair not in ratios:
            continue
        alone = ratios.get(f"{pair}_adapter_only")
        lines.append(f"| {label} | {_verdict(ratios[pair], LAYER_TARGETS.get(pair))} | "
                     f"{_verdict(alone, LAYER_TARGETS.get(f'{pair}_adapter_only'))} |")
    median = result["median_ms"]
    times = ", ".join(f"{name} {value:.1f}" for name, value in median.items())
    each = f", each timing the mean of {result['repeats']} calls" if "repeats" in result else ""
    return (f"{result['tokens']} tokens through one {result['dim']} x {result['dim']} layer, "
            f"{result.get('dtype', 'float32')}, on {result['device']}, median of {result['rounds']} rounds{each}; "
            f"top-1 ran {'grouped by expert' if result.get('top1_grouped') else 'dense'}.\n\n"
            + "\n".join(lines) + f"\n\nMedian milliseconds per forward + backward: {times}.")


def layer_memory_table(result: dict) -> str:
    saved = {name: value / 2**20 for name, value in result["saved_bytes"].items()}
    ratios = result["ratios"]
    rows = [("peft LoRA r8 / r30 / r32", " / ".join(f"{saved[f'peft_lora_r{r}']:.2f}" for r in (8, 30, 32)), ""),
            ("fused RoDE `[2, 4, 8, 16]`", f"{saved['rode_2_4_8_16']:.2f}",
             f"{ratios['rode_2_4_8_16_vs_peft_lora_r30']:.2f} x LoRA r30"),
            ("per-expert reference loop", f"{saved['rode_2_4_8_16_reference_loop']:.2f}",
             f"{ratios['rode_reference_loop_vs_fused']:.2f} x fused RoDE"),
            ("softmax 4 x r8", f"{saved['softmax_8x4']:.2f}", f"{ratios['softmax_8x4_vs_peft_lora_r32']:.2f} x LoRA r32"),
            ("top-1 4 x r8", f"{saved['top1_8x4']:.2f}",
             _verdict(ratios['top1_8x4_vs_peft_lora_r8'], MEMORY_TARGETS['top1_8x4_vs_peft_lora_r8']).replace(
                 " (", " x LoRA r8 (", 1)),
            ("MoCLE cluster 4 x r8", f"{saved['cluster_8x4']:.2f}", f"{ratios['cluster_8x4_vs_peft_lora_r32']:.2f} x LoRA r32")]
    lines = ["| variant | MiB saved | / reference |", "| --- | --- | --- |"]
    lines += [f"| {variant} | {mib} | {ratio} |" for variant, mib, ratio in rows]
    return f"{result['tokens']} tokens, width {result['dim']}:\n\n" + "\n".join(lines)


def model_table(result: dict) -> str:
    """model_step.py's ratios of every method to its LoRA, per model shape, and the cost over the frozen model."""
    lines = ["| model | method / LoRA | training step | step, adapter work alone | generation tokens/s | "
             "saved for backward |", "| --- | --- | --- | --- | --- | --- |"]
    frozen = []
    for name, shape in result["shapes"].items():
        ratios, size = shape["ratios"], shape["shape"]
        model = f"{name} ({size['blocks']} blocks x {size['hidden']})"
        for pair, label in MODEL_PAIRS.items():
            cells = [_verdict(ratios[group][pair], TARGETS_AT_MOST.get(group, {}).get(pair),
                              TARGETS_AT_LEAST.get(group, {}).get(pair))
                     for group in ("step", "step_adapter_only", "generation_tokens_per_second", "saved_bytes")]
            lines.append(f"| {model} | {label} | " + " | ".join(cells) + " |")
        over = ratios["step_vs_frozen"].values()
        frozen.append(f"{min(over):.2f}-{max(over):.2f} x ({name})")
        train, generate = shape["train_batch"], shape["generate_batch"]
    repeats = [f"{shape['repeats']['step']} steps and {shape['repeats']['generation']} generations ({name})"
               for name, shape in result["shapes"].items() if "repeats" in shape]
    each = f" (each timing the mean of {', '.join(repeats)})" if repeats else ""
    return (f"Training step on {train[0]} x {train[1]} tokens; generation of {generate[2]} new tokens for {generate[0]} "
            f"prompts of {generate[1]}; median of {result['shapes'][name]['rounds']} rounds{each}, "
            f"{result['threads']} threads, {result['device']}.\n\n" + "\n".join(lines)
            + f"\n\nAgainst the frozen model without adapters a training step costs {' and '.join(frozen)} with any "
              "adapter.")


SERVE_SETUPS = {"rode_batched": "RoDE `[2, 4, 8, 16]`, batched (`--max_batch_size 8`)",
                "rode_one_at_a_time": "RoDE `[2, 4, 8, 16]`, one at a time (`--max_batch_size 1`)",
                "lora_batched": "LoRA r32, batched (`--max_batch_size 8`)"}


def serve_load_table(result: dict) -> str:
    """serve_load.py: per serving setup, what was answered and how fast; the ratios against their aims."""
    lines = ["| setup | answered / failed / lost | requests/s | tokens/s | p50 latency | p95 latency | mean batch |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, label in SERVE_SETUPS.items():
        row = result["results"][name]
        lines.append(f"| {label} | {row['answered']} / {row['failed']} / {row['lost']} | "
                     f"{row['requests_per_second']:.2f} | {row['tokens_per_second']:.1f} | {row['p50_seconds']:.2f} s | "
                     f"{row['p95_seconds']:.2f} s | {row['mean_batch_size']:.2f} |")
    ratios = result["ratios"]
    return (f"{result['requests']} requests from {result['clients']} concurrent clients (the demo's test photos, "
            f"the four tasks in turn), the demo model in fp32 on the CPU, {result['threads']} threads; each setup a "
            "fresh server.\n\n" + "\n".join(lines) + "\n\nThroughput, batched / one at a time: "
            + _verdict(ratios["batched_vs_one_at_a_time"], at_least=SERVE_TARGETS["batched_vs_one_at_a_time"])
            + "; RoDE / LoRA r32, both batched: " + _verdict(ratios["rode_vs_lora"],
                                                             at_least=SERVE_TARGETS["rode_vs_lora"]) + ".")


def gpu_block(summary: dict | None) -> str:
    if summary is None:
        return ("Not measured: no GPU has been lent to this project yet. On a machine with one, "
                "`bash benchmarks/gpu_check.sh` writes `results/gpu/`, and `python scripts/benchmark_results.py "
                "render` puts its figures here.")
    parts = []
    for name, result in summary.items():
        if result.get("failed"):
            parts.append(f"`{name}`: failed or ran out of its time (exit {result.get('exit_status')}).")
        elif name.startswith("adapter_speed"):
            parts.append(f"`{name}`: " + layer_speed_table(result))
        elif name == "adapter_memory":
            parts.append(f"`{name}`: " + layer_memory_table(result))
        elif name == "model_step":
            parts.append(f"`{name}`: " + model_table(result))
        elif name == "full_size_step":
            parts.append(f"`{name}` (configs/rode.yaml at full size, random weights, {result['device']}): "
                         f"{result['median_step_seconds']:.3f} s per step of batch {result['batch_size']} x <= "
                         f"{result['longest_sequence']} tokens, peak {result['peak_memory_gib']:.2f} GiB "
                         f"({result['peak_memory_kind']}); the estimate for these shapes: "
                         f"{result['estimate_gib']:.2f} GiB.")
    return "`bash benchmarks/gpu_check.sh`:\n\n" + "\n\n".join(parts)


def _result(name: str) -> dict:
    return last_json((RESULTS / f"{name}.txt").read_text())


def blocks() -> dict[str, str]:
    """The generated README blocks, by name."""
    record = json.loads((RESULTS / "provenance.json").read_text())
    versions = record["versions"]
    shown = ", ".join(f"{name} {versions[name]}" for name in ("python", "torch", "transformers", "peft"))
    summary_file = GPU_RESULTS / "summary.json"
    return {
        "adapter_speed": f"`{_command('adapter_speed')}`: " + layer_speed_table(_result("adapter_speed")),
        "adapter_memory": f"`{_command('adapter_memory')}`: " + layer_memory_table(_result("adapter_memory")),
        "model_step": f"`{_command('model_step')}`: " + model_table(_result("model_step")),
        **({"model_step_qwen2_5_vl": f"`{_command('model_step_qwen2_5_vl')}`: "
            + model_table(_result("model_step_qwen2_5_vl"))}
           if (RESULTS / "model_step_qwen2_5_vl.txt").is_file() else {}),
        **({"serve_load": f"`{_command('serve_load')}`: " + serve_load_table(_result("serve_load"))}
           if (RESULTS / "serve_load.txt").is_file() else {}),
        "gpu": gpu_block(json.loads(summary_file.read_text()) if summary_file.is_file() else None),
        "versions": f"Measured with {shown} ({record['platform']}, {record['threads']} threads).",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "render", "check"])
    parser.add_argument("names", nargs="*", help="run: only these benchmarks (default: all)")
    arguments = parser.parse_args()
    action = arguments.action
    if action == "run":
        run(arguments.names)
    elif action == "render":
        readme_blocks.render(KIND, blocks)
    else:
        return readme_blocks.check(KIND, blocks, "python scripts/benchmark_results.py render")
    return 0


if __name__ == "__main__":
    sys.exit(main())
