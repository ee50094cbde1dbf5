"""The estimate's adapter activation term against what autograd really keeps for backward."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.inject import inject_adapters
from rode_lightning.estimate import adapter_activation_bytes, block_activation_bytes

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from adapter_memory import saved_activation_bytes  # noqa: E402

WIDTH = 512


class QueryKey(nn.Module):
    """The adapted part of a LLaMA attention block: frozen bf16 q and k projections reading the same tensor."""

    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(WIDTH, WIDTH, bias=False, dtype=torch.bfloat16)
        self.k_proj = nn.Linear(WIDTH, WIDTH, bias=False, dtype=torch.bfloat16)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_proj(x) + self.k_proj(x)


def measured_bytes_per_token(config: AdapterConfig) -> float:
    """Saved bytes per token under bf16 autocast, as the difference of two token counts (fixed costs such as the
    bf16 copies autocast makes of the fp32 adapter weights cancel out)."""
    saved = []
    for tokens in (64, 128):
        torch.manual_seed(0)
        model, context = QueryKey(), RoutingContext()
        inject_adapters(model, config, context, cluster_dim=16 if config.method == "cluster" else None)
        context.cluster_features = torch.randn(2, 16)
        x = torch.randn(2, tokens // 2, WIDTH, dtype=torch.bfloat16, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            saved.append(saved_activation_bytes(model.train(), x))
    return (saved[1] - saved[0]) / 64


@pytest.mark.parametrize("dropout", [0.0, 0.05])
@pytest.mark.parametrize("method, ranks", [("lora", [32]), ("rode", [2, 4, 8, 16]), ("softmax", [8, 8, 8, 8]),
                                           ("top1", [8, 8, 8, 8]), ("cluster", [8, 8, 8, 8])])
def test_adapter_activations_are_what_autograd_keeps(method, ranks, dropout):
    config = AdapterConfig(method=method, ranks=ranks, dropout=dropout, target_modules=["q_proj", "k_proj"],
                           num_clusters=4)
    estimate = adapter_activation_bytes(config, [("self_attn.q_proj", WIDTH, WIDTH),
                                                 ("self_attn.k_proj", WIDTH, WIDTH)])
    # The estimate is for CUDA, where dropout keeps a bool mask (one byte per value). On the CPU it keeps the scaled
    # noise, in the dtype dropout ran in: bf16 for the mixtures, fp32 for peft's LoRA, which casts its input to its
    # fp32 weights first.
    cpu_mask_extra = 0 if dropout == 0 else (3 if method == "lora" else 1) * WIDTH * 2  # two layers
    assert measured_bytes_per_token(config) == pytest.approx(estimate + cpu_mask_extra, rel=0.02)


def test_under_autocast_mixtures_keep_no_upcast_copy_of_their_input():
    """A bf16 input to fp32 adapters, as under ``bf16-mixed`` with a bf16 LLaMA: routers and experts use it as it is,
    so the q and k adapters together keep that one input (and tiny rank-wide tensors). Cast to fp32 first, the
    matmuls would cast it back to bf16, a new copy each: four input-sized copies for the two layers."""
    kept = measured_bytes_per_token(AdapterConfig(method="rode", ranks=[2, 4, 8, 16], dropout=0.0,
                                                  target_modules=["q_proj", "k_proj"]))
    assert 2 * WIDTH <= kept < 1.5 * 2 * WIDTH


def test_the_frozen_block_term_is_what_autograd_keeps_for_a_llama_block():
    """One transformers LLaMA decoder block, frozen, in bf16 under autocast, with PyTorch's attention (sdpa; on the
    CPU its flash kernel, which like CUDA's keeps q, k, v, the output and the log-sum-exp, not the attention map)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=100, attn_implementation="sdpa")
    model = LlamaForCausalLM(config).to(torch.bfloat16).requires_grad_(False)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.rotary = model.model.layers[0], model.model.rotary_emb

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            positions = torch.arange(x.shape[1]).unsqueeze(0)
            output = self.layer(x, position_ids=positions, position_embeddings=self.rotary(x, positions))
            return output[0] if isinstance(output, tuple) else output

    saved = []
    for tokens in (128, 256):
        x = torch.randn(1, tokens, 256, dtype=torch.bfloat16, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            saved.append(saved_activation_bytes(Block(), x))
    assert (saved[1] - saved[0]) / 128 == block_activation_bytes(config)


def test_under_fsdp_each_gpu_holds_its_share_of_the_frozen_weights_plus_two_gathered_units(tmp_path, capsys):
    """configs/fsdp.yaml shards over 8 processes. The largest unit a GPU gathers whole is the bf16 ViT-L tower
    (304 M parameters, more than a 7B decoder block's 202 M)."""
    from rode_lightning.estimate import fsdp_shards, main as estimate

    configs = Path(__file__).parents[1] / "configs"
    one_gpu = estimate(["--config", str(configs / "rode.yaml")])["this config"]["memory_gib"]
    ddp = estimate(["--config", str(configs / "rode.yaml"), "--config", str(configs / "ddp.yaml")])
    fsdp = estimate(["--config", str(configs / "rode.yaml"), "--config", str(configs / "fsdp.yaml")])
    four = estimate(["--config", str(configs / "rode.yaml"), "--config", str(configs / "fsdp.yaml"), "--shards", "4"])
    assert "FSDP: frozen weights sharded over 8 processes" in capsys.readouterr().out
    assert ddp["this config"]["memory_gib"] == one_gpu  # DDP holds a whole copy
    projector = (1024 * 4096 + 4096 + 4096 * 4096 + 4096) * 4 / 2**30  # fp32, frozen in rode.yaml
    from rode_lightning.model.vision import VisionConfig, VisionEncoder

    with torch.device("meta"):
        tower = sum(p.numel() for p in VisionEncoder(VisionConfig(preset="ViT-L-14-336")).parameters()) * 2 / 2**30
    for shards, report in ((8, fsdp), (4, four)):
        memory = report["this config"]["memory_gib"]
        expected = (one_gpu["frozen_weights"] - projector) / shards + 2 * tower + projector
        assert memory["frozen_weights"] == pytest.approx(expected, rel=1e-9)
        assert {key: value for key, value in memory.items() if key != "frozen_weights"} == {
            key: value for key, value in one_gpu.items() if key != "frozen_weights"}

    assert fsdp_shards({"strategy": "ddp", "devices": 8}) == 1
    assert fsdp_shards({"devices": 4, "num_nodes": 2, "strategy": {
        "class_path": "lightning.pytorch.strategies.ModelParallelStrategy", "init_args": {}}}) == 8
    with pytest.raises(ValueError, match="data_parallel_size 'auto' and devices -1; pass --shards N"):
        fsdp_shards({"devices": -1, "strategy": {"class_path": "rode_lightning.scale.strategy.AdapterFSDPStrategy",
                                                 "init_args": {"data_parallel_size": "auto"}}})


@pytest.mark.parametrize("shards", ["0", "-2"])
def test_a_shard_count_below_one_is_refused(shards, capsys):
    from rode_lightning.estimate import main as estimate

    configs = Path(__file__).parents[1] / "configs"
    with pytest.raises(SystemExit):
        estimate(["--config", str(configs / "rode.yaml"), "--shards", shards])
    assert f"--shards {shards}: the number of processes sharing the weights must be at least 1" in capsys.readouterr().err


def test_a_regex_target_modules_is_estimated_as_the_layers_it_matches():
    """inject.py matches an entry with regex characters against the full module name; the estimate uses the same
    matcher, so a regex is neither estimated without adapter activations nor as if it adapted every block."""
    from transformers import LlamaConfig

    from rode_lightning.estimate import count_parameters, memory_estimate
    from rode_lightning.model.vision import VisionConfig

    llama = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                        num_key_value_heads=4, vocab_size=100)
    vision = VisionConfig()

    def estimate(targets, checkpointing=False):
        adapter = AdapterConfig(method="rode", ranks=[2, 4], dropout=0.0, target_modules=targets)
        counts = count_parameters(vision, llama, adapter, train_projector=False)
        return memory_estimate(counts, llama, adapter, 2, 8, "fp32", checkpointing), counts

    suffix, suffix_counts = estimate(["q_proj"])
    regex, regex_counts = estimate([r"model\.layers\.\d+\.self_attn\.q_proj"])
    assert regex == suffix and regex_counts == suffix_counts
    # One block adapted: its adapter term once, not three times, and a third of the adapter parameters.
    only_first, first_counts = estimate([r"model\.layers\.0\.self_attn\.q_proj"])
    blocks = first_counts.adapted_layers
    assert [len(block) for block in blocks] == [1, 0, 0]
    one_block = 2 * 8 * adapter_activation_bytes(AdapterConfig(method="rode", ranks=[2, 4], dropout=0.0), blocks[0])
    assert one_block > 0
    assert suffix["activations"] - only_first["activations"] == pytest.approx(2 * one_block)
    assert first_counts.adapter * 3 == suffix_counts.adapter


def test_the_estimate_takes_fit_s_overrides_and_refuses_what_fit_refuses(capsys):
    """Parsed by the CLI's own parser: a ``--key value`` override changes the estimated adapter as it would change
    the trained one, and a value fit refuses is refused with fit's message."""
    from rode_lightning.estimate import main as estimate

    rode = str(Path(__file__).parents[1] / "configs" / "rode.yaml")
    overridden = estimate(["--config", rode, "--model.adapter.method", "lora", "--model.adapter.ranks", "[32]"])
    mine, compared = overridden["this config"], overridden["lora r32"]
    assert (mine["method"], mine["ranks"]) == ("lora", [32])
    assert mine["trainable_parameters"] == compared["trainable_parameters"] == 32 * 2 * 32 * (4096 + 4096)
    with pytest.raises(ValueError, match=r"adapter.ranks: every rank must be a positive integer, got \[0\]"):
        estimate(["--config", rode, "--model.adapter.ranks", "[0]"])
    with pytest.raises(ValueError, match="method 'lora' takes exactly one rank"):
        estimate(["--config", rode, "--model.adapter.method", "lora"])


def test_a_mistake_on_the_estimate_s_command_line_is_one_error_line(tmp_path, capfd):
    import subprocess
    import sys

    from rode_lightning.estimate import main as estimate_main
    from rode_lightning.user_errors import reported_in_one_line

    rode = str(Path(__file__).parents[1] / "configs" / "rode.yaml")
    # The mistake in this process, as `python -m rode_lightning.estimate` runs main (a fresh interpreter adds only
    # its start-up); the clean run below in one, whose stderr must be empty.
    capfd.readouterr()
    with pytest.raises(SystemExit) as stop, reported_in_one_line():
        estimate_main(["--config", rode, "--model.adapter.rank", "4"])
    errors = capfd.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in errors, errors[-2000:]
    assert errors.strip().splitlines()[-1].startswith("error: ") and "rank" in errors
    fine = subprocess.run([sys.executable, "-m", "rode_lightning.estimate", "--config", rode], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert fine.returncode == 0 and fine.stderr.strip() == "", fine.stderr[-2000:]  # no warning of the parser's
