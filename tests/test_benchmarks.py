"""The benchmark scripts run, and the memory benchmark counts what it says it counts (exact, on known layers).

The scripts run once, through ``benchmarks/gpu_check.sh --cpu`` (the GPU check at tiny shapes runs each of them with
the arguments these tests check); each script's test reads the JSON its run ended with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from adapter_memory import saved_activation_bytes  # noqa: E402
from adapter_speed import peft_lora  # noqa: E402


def test_a_frozen_linear_saves_nothing_and_lora_saves_its_input_and_rank_wide_activation():
    tokens, dim, rank = 40, 16, 4
    x = torch.randn(tokens, dim, requires_grad=True)
    frozen = nn.Linear(dim, dim).requires_grad_(False)
    assert saved_activation_bytes(frozen, x) == 0  # the input's gradient needs only the weight
    # LoRA: A's gradient needs the input, B's needs A x (tokens x rank); fp32.
    assert saved_activation_bytes(peft_lora(dim, rank), x) == tokens * (dim + rank) * 4


def test_paired_ratios_compare_timings_of_the_same_round():
    from paired import paired_excess_ratio, paired_ratio, round_order, timed_rounds

    # The machine slows down 10x halfway: per-round ratios stay 2 where a ratio of medians would not.
    a, b, base = [2.0, 2.0, 20.0, 20.0, 20.0], [1.0, 1.0, 10.0, 10.0, 10.0], [0.5, 0.5, 5.0, 5.0, 5.0]
    assert paired_ratio(a, b) == 2.0
    assert paired_excess_ratio(a, b, base) == 3.0  # (2 - 0.5) / (1 - 0.5)
    assert list(round_order(["x", "y", "z"], 0)) == ["x", "y", "z"]
    assert list(round_order(["x", "y", "z"], 1)) == ["z", "y", "x"]
    calls = []
    times = timed_rounds(["x", "y"], 3, lambda name: calls.append(name) or float(len(calls)))
    assert calls == ["x", "y", "y", "x", "x", "y"] and times == {"x": [1.0, 4.0, 5.0], "y": [2.0, 3.0, 6.0]}
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])  # rounds must pair up


def test_a_timing_is_the_mean_of_its_repeats_and_repeats_fill_the_asked_time():
    from paired import repeats_for, timed_rounds

    calls = []
    times = timed_rounds(["x", "y"], 2, lambda name: calls.append(name) or float(len(calls)), repeats=2)
    assert calls == ["x", "y", "x", "y", "y", "x", "y", "x"]  # interleaved, the order alternating by round
    assert times == {"x": [2.0, 7.0], "y": [3.0, 6.0]}
    assert repeats_for(0.1, 0.5) == 5 and repeats_for(0.3, 0.5) == 2 and repeats_for(2.0, 0.5) == 1
    assert repeats_for(0.1, 0) == 1


def test_views_of_one_storage_count_once():
    x = torch.randn(10, 8, requires_grad=True)

    class TwoViews(nn.Module):
        def forward(self, inputs):
            doubled = inputs * 2  # saves nothing from `inputs` (a constant factor)
            return (doubled[:5] * doubled[:5]).sum() + (doubled[5:] * doubled[5:]).sum()

    assert saved_activation_bytes(TwoViews(), x) == x.numel() * 4


@pytest.fixture(scope="module")
def gpu_check_on_the_cpu(tmp_path_factory):
    """``bash benchmarks/gpu_check.sh --cpu OUT``, run once: its output and OUT (a part's printed table in
    ``<part>.txt``, its last line in ``<part>.json``)."""
    out = tmp_path_factory.mktemp("gpu_check")
    result = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--cpu", str(out)], capture_output=True,
                            text=True, timeout=600, cwd=BENCHMARKS.parent, env={**os.environ, "PYTHON": sys.executable})
    return result, out


def part_summary(gpu_check_on_the_cpu, part: str) -> dict:
    """The JSON line a part of the check ended with (its script's own last line), after asserting the part ran."""
    _, out = gpu_check_on_the_cpu
    assert (out / f"{part}.txt").is_file(), f"{part} did not run"
    lines = (out / f"{part}.txt").read_text().strip().splitlines()
    assert lines, (out / f"{part}.err").read_text()[-3000:]
    summary = json.loads(lines[-1])
    assert not summary.get("failed"), (out / f"{part}.err").read_text()[-3000:]
    return summary


@pytest.mark.parametrize("script, extra", [
    ("adapter_memory.py", []), ("adapter_speed.py", ["--rounds", "1", "--min-sample-seconds", "0"]),
    ("adapter_speed.py", ["--rounds", "1", "--min-sample-seconds", "0", "--dtype", "bfloat16"])])
def test_benchmark_scripts_run_and_end_with_their_json(script, extra, gpu_check_on_the_cpu):
    # gpu_check.sh --cpu runs these scripts with --tokens 64 --dim 32 and the extra arguments above.
    part = script.removesuffix(".py") + ("_bf16" if "bfloat16" in extra else "")
    command = (BENCHMARKS / "gpu_check.sh").read_text()
    assert all(argument in command for argument in ["--tokens 64", "--dim 32", *extra])
    summary = part_summary(gpu_check_on_the_cpu, part)
    assert summary["tokens"] == 64 and summary["dim"] == 32
    assert "rode_2_4_8_16_vs_peft_lora_r30" in summary["ratios"]
    if script == "adapter_speed.py":
        assert summary["dtype"] == extra[-1] if "--dtype" in extra else summary["dtype"] == "float32"
        assert summary["top1_grouped"] is False  # no grouped GEMM kernel on the CPU
        assert summary["ratios"]["top1_grouped_vs_dense"] > 0
    if script == "adapter_memory.py":
        saved, input_bytes = summary["saved_bytes"], 64 * 32 * 4
        # A loop over 4 experts keeps an output-wide tensor per expert (square layer: input-sized); every variant
        # keeps the input at least.
        assert saved["rode_2_4_8_16_reference_loop"] >= 4 * input_bytes
        assert min(value for name, value in saved.items() if name != "base_only") >= input_bytes


def test_the_speed_benchmark_compares_top1_with_its_own_weights_held_to_the_dense_product():
    from adapter_speed import build_variants

    variants = build_variants(dim=16, batch=2, dtype=torch.bfloat16)
    grouped, dense = variants["top1_8x4"].proj, variants["top1_8x4_dense"].proj
    assert grouped.experts.allow_grouped and not dense.experts.allow_grouped
    for (name, mine), (_, theirs) in zip(grouped.named_parameters(), dense.named_parameters()):
        assert torch.equal(mine, theirs), name
    assert grouped.base.weight.dtype == torch.bfloat16 and grouped.experts.lora_A.dtype == torch.float32
    lora = variants["peft_lora_r8"]
    assert lora.proj.base_layer.weight.dtype == torch.bfloat16 and lora.proj.lora_A["default"].weight.dtype == torch.float32


def test_full_size_step_script_runs_on_the_tiny_shapes(gpu_check_on_the_cpu):
    """The script for a GPU machine (configs/rode.yaml at full size, random weights), checked on the CPU with
    --tiny (gpu_check.sh --cpu runs it with --steps 2): it trains the asked steps through the CLI and reports time,
    peak memory and the estimate."""
    summary = part_summary(gpu_check_on_the_cpu, "full_size_step")
    tmp_path = gpu_check_on_the_cpu[1] / "full_size_step"
    assert summary["steps"] == 2 and summary["batch_size"] == 4 and summary["device"] == "cpu"
    assert summary["median_step_seconds"] > 0 and summary["peak_memory_gib"] > 0
    assert set(summary["estimate_components_gib"]) == {"frozen_weights", "trainable_states", "activations", "logits"}
    assert (tmp_path / "logs" / "rode" / "version_0" / "adapter").is_dir()  # the run went through fit to the end


def test_the_whole_model_benchmark_compares_every_method_with_its_lora_and_the_frozen_model(gpu_check_on_the_cpu):
    # gpu_check.sh --cpu runs model_step.py --shape tiny --rounds 1 --batch 2 --length 16 --generate-batch 2
    # --prompt-length 8 --new-tokens 2 --min-sample-seconds 0.
    tiny = part_summary(gpu_check_on_the_cpu, "model_step")["shapes"]["tiny"]
    assert tiny["repeats"] == {"step": 1, "generation": 1}
    trainable = tiny["trainable_parameters"]
    assert trainable["frozen"] == 0 and trainable["rode_2_4_8_16"] > trainable["lora_r30"] > trainable["lora_r8"] > 0
    for group in ("step", "step_adapter_only", "generation_tokens_per_second", "saved_bytes"):
        assert set(tiny["ratios"][group]) == {"rode_2_4_8_16_vs_lora_r30", "top1_8x4_vs_lora_r8",
                                              "softmax_8x4_vs_lora_r32", "cluster_8x4_vs_lora_r32"}
    # Saved bytes are exact: the frozen model keeps less than any adapted one, and the ratio is the bytes' ratio.
    saved = tiny["saved_bytes"]
    assert all(saved["frozen"] < value for name, value in saved.items() if name != "frozen")
    assert tiny["ratios"]["saved_bytes"]["top1_8x4_vs_lora_r8"] == round(saved["top1_8x4"] / saved["lora_r8"], 4)
    assert all(value > 0 for value in tiny["generation_tokens_per_second"].values())


def test_the_gpu_check_script_runs_every_part_on_the_cpu(gpu_check_on_the_cpu):
    """benchmarks/gpu_check.sh --cpu: the prepared GPU check at tiny shapes, every part ending in its JSON."""
    result, tmp_path = gpu_check_on_the_cpu
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "adapter_memory": True, "adapter_speed": True, "adapter_speed_bf16": True, "full_size_step": True,
        "model_step": True}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model_step"]["device"] == "cpu" and summary["adapter_speed"]["device"] == "cpu"
    assert summary["adapter_speed"]["dtype"] == "float32" and summary["adapter_speed_bf16"]["dtype"] == "bfloat16"
    # README's GPU block renders this summary as it will render a GPU's.
    sys.path.insert(0, str(BENCHMARKS.parent / "scripts"))
    try:
        from benchmark_results import gpu_block
    finally:
        sys.path.pop(0)
    block = gpu_block(summary)
    assert all(f"`{part}`" in block for part in summary) and "failed" not in block
    assert "bfloat16" in block and "| fused RoDE" in block and "| tiny (" in block
    assert "failed or ran out of its time (exit 124)" in gpu_block({"model_step": {"failed": True, "exit_status": 124}})


def test_the_gpu_check_parts_fit_in_ten_minutes():
    import re

    script = (BENCHMARKS / "gpu_check.sh").read_text()
    budgets = [int(seconds) for seconds in re.findall(r"^run_part \S+ (\d+) ", script, flags=re.MULTILINE)]
    assert len(budgets) == 5 and sum(budgets) <= 580  # room for the start and the summary in 600 s
