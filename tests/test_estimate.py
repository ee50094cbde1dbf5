"""The estimate's adapter activation term against what autograd really keeps for backward; with ``model.base:
transformers``, its counts from ``config.json`` alone against the model fit builds."""

from __future__ import annotations

import sys
from dataclasses import replace
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


def saved_bytes_per_token(layer: nn.Module, rotary: nn.Module, positions, multimodal: bool = False) -> float:
    """Bytes autograd keeps per token for one 256-wide decoder block under bf16 autocast: the difference between
    256 and 128 tokens, divided by 128. ``positions(tokens)`` gives the rotary positions (Qwen's: three rows)."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.rotary = layer, rotary

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rotary_positions = positions(x.shape[1])
            position_ids = rotary_positions[0] if multimodal else rotary_positions
            output = self.layer(x, position_ids=position_ids, position_embeddings=self.rotary(x, rotary_positions))
            return output[0] if isinstance(output, tuple) else output

    saved = []
    for tokens in (128, 256):
        x = torch.randn(1, tokens, 256, dtype=torch.bfloat16, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            saved.append(saved_activation_bytes(Block(), x))
    return (saved[1] - saved[0]) / 128


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

    assert saved_bytes_per_token(model.model.layers[0], model.model.rotary_emb,
                                 lambda tokens: torch.arange(tokens).unsqueeze(0)) == block_activation_bytes(config)


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


def test_a_mistake_on_the_estimate_s_command_line_is_one_error_line(capfd, caplog):
    import logging
    import warnings

    from rode_lightning.estimate import main as estimate_main
    from rode_lightning.user_errors import reported_in_one_line

    rode = str(Path(__file__).parents[1] / "configs" / "rode.yaml")
    # In this process, as `python -m rode_lightning.estimate` runs main (a fresh interpreter adds only its start-up,
    # ~20 s here).
    capfd.readouterr()
    with pytest.raises(SystemExit) as stop, reported_in_one_line():
        estimate_main(["--config", rode, "--model.adapter.rank", "4"])
    errors = capfd.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in errors, errors[-2000:]
    assert errors.strip().splitlines()[-1].startswith("error: ") and "rank" in errors
    # The clean run says nothing on stderr: no warning a fresh interpreter would show (every one recorded, those
    # Python hides by default aside) and no logged warning.
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        estimate_main(["--config", rode])
    shown = [str(warning.message) for warning in caught if not issubclass(warning.category, hidden)]
    assert shown == [] and [record.getMessage() for record in caplog.records] == []
    assert capfd.readouterr().err.strip() == ""


# --- model.base: transformers -----------------------------------------------------------------------------------

BASES = Path(__file__).parents[1] / "configs" / "bases"


@pytest.fixture(scope="module")
def qwen_dirs(tmp_path_factory) -> dict[bool, Path]:
    """The tiny Qwen2-VL as saved (a separate LM head) and one whose LM head is its embedding (saved tied: with two
    different tensors on disk transformers would not tie them)."""
    from tests.tiny_vlm import save_tiny_qwen2vl, tiny_qwen2vl_model, tiny_qwen2vl_processor

    untied = save_tiny_qwen2vl(tmp_path_factory.mktemp("qwen2vl"))
    tied = tmp_path_factory.mktemp("qwen2vl_tied")
    model = tiny_qwen2vl_model(tiny_qwen2vl_processor(tied))
    model.config.tie_word_embeddings = True
    model.tie_weights()
    model.save_pretrained(tied)
    return {False: untied, True: tied}


def built_counts(directory: Path, adapter: AdapterConfig, train_projector: bool) -> dict[str, int]:
    """The counts of the model fit builds (``FoodLMMModule.configure_model``, real weights read), by parameter name:
    Qwen2-VL's vision tower is ``model.visual``, its connector ``model.visual.merger``."""
    from rode_lightning.model.module import FoodLMMModule
    from rode_lightning.model.transformers_base import TransformersConfig

    module = FoodLMMModule(base="transformers", transformers=TransformersConfig(path=str(directory), dtype="fp32"),
                           adapter=adapter, train_projector=train_projector)
    module.configure_model()
    trainable = module.model.trainable_parameters()
    named = dict(module.model.hf.named_parameters())  # a tied embedding and head: one entry
    hf = module.model.hf
    assert (hf.get_output_embeddings().weight is hf.get_input_embeddings().weight) == hf.config.tie_word_embeddings

    def total(names) -> int:
        return sum(named[name].numel() for name in names)

    # The adapter layers' own tensors (a mixture's experts and router, peft's lora_A / lora_B), wherever they are:
    # with scope: model, all-linear adapts the merger's linears too.
    adapters = [name for name in trainable if any(part in name for part in (".experts.", ".router.", ".lora_"))]
    adapters += ["cluster_embedding"] if "cluster_embedding" in trainable else []
    connector = [name for name in named if name.startswith("model.visual.merger.") and f"hf.{name}" not in adapters]
    frozen = [name for name in named if not named[name].requires_grad]
    return {"frozen_language": total(n for n in frozen if not n.startswith("model.visual.")),
            "frozen_vision": total(n for n in frozen if n.startswith("model.visual.") and n not in connector),
            "projector": total(connector),
            "adapter": sum(trainable[name].numel() for name in adapters),
            "trainable": sum(parameter.numel() for parameter in trainable.values())}


def estimated_counts(directory: Path, adapter: AdapterConfig, train_projector: bool):
    from rode_lightning.estimate import count_transformers_parameters, transformers_shape
    from rode_lightning.model.transformers_base import TransformersConfig

    counts = count_transformers_parameters(transformers_shape(TransformersConfig(path=str(directory))), adapter,
                                           train_projector)
    return counts, {"frozen_language": counts.frozen_language, "frozen_vision": counts.frozen_vision,
                    "projector": counts.projector, "adapter": counts.adapter, "trainable": counts.trainable}


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("train_projector", [True, False])
@pytest.mark.parametrize("method, ranks", [("rode", [2, 4, 8, 16]), ("lora", [8])])
def test_transformers_counts_from_config_json_are_those_of_the_model_fit_builds(qwen_dirs, method, ranks,
                                                                               train_projector, tied):
    adapter = AdapterConfig(method=method, ranks=ranks, target_modules=["q_proj", "k_proj"])
    counts, estimated = estimated_counts(qwen_dirs[tied], adapter, train_projector)
    assert estimated == built_counts(qwen_dirs[tied], adapter, train_projector)
    assert [len(block) for block in counts.adapted_layers] == [2, 2]  # q and k of each of the 2 decoder blocks
    assert counts.adapted_layers[0][1] == ("layers.0.self_attn.k_proj", 64, 32)  # 2 key-value heads of 16


@pytest.mark.parametrize("method, ranks", [("rode", [2, 4, 8, 16]), ("lora", [8])])
def test_qwen2_5_vl_counts_from_config_json_are_those_of_the_built_model(tmp_path, method, ranks):
    """Issue 25's acceptance on Qwen2.5-VL (the family of configs/rode_qwen2_5_vl_7b.yaml), built tiny."""
    from tests.tiny_families import build_tiny_family

    directory = build_tiny_family("qwen2_5_vl", tmp_path / "qwen2_5_vl")
    adapter = AdapterConfig(method=method, ranks=ranks, target_modules=["q_proj", "k_proj"])
    for train_projector in (True, False):
        _, estimated = estimated_counts(directory, adapter, train_projector)
        assert estimated == built_counts(directory, adapter, train_projector)


def test_scope_model_adapts_the_vision_tower_too_and_the_estimate_counts_it(qwen_dirs):
    inside = AdapterConfig(method="rode", ranks=[2, 4], target_modules=["all-linear"])
    whole = replace(inside, scope="model")
    language_counts, language = estimated_counts(qwen_dirs[False], inside, True)
    model_counts, model = estimated_counts(qwen_dirs[False], whole, True)
    assert model == built_counts(qwen_dirs[False], whole, True)
    assert model["adapter"] > language["adapter"] and model["frozen_vision"] == language["frozen_vision"]
    # The vision blocks' adapters are not decoder blocks' activations: the per-block layers are the same.
    assert [len(block) for block in model_counts.adapted_layers] == [len(block) for block in
                                                                    language_counts.adapted_layers] == [7, 7]


@pytest.mark.parametrize("train_projector", [True, False])
def test_the_largest_fsdp_unit_is_the_largest_of_the_units_the_built_model_shards(qwen_dirs, train_projector):
    """The estimate lists the units itself from the meta model; they must be those TransformersLMM.frozen_units
    gives FSDP, each holding the frozen parameters no unit inside it holds, the root keeping the rest."""
    from rode_lightning.model.module import FoodLMMModule
    from rode_lightning.model.transformers_base import TransformersConfig

    adapter = AdapterConfig(method="rode", ranks=[2, 4], target_modules=["q_proj", "k_proj"])
    for tied in (False, True):
        counts, _ = estimated_counts(qwen_dirs[tied], adapter, train_projector)
        module = FoodLMMModule(base="transformers", adapter=adapter, train_projector=train_projector,
                               transformers=TransformersConfig(path=str(qwen_dirs[tied]), dtype="fp32"))
        module.configure_model()
        seen: set[int] = set()
        sizes = []
        for unit in module.model.frozen_units():
            frozen = [p for p in unit.parameters() if not p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in frozen)
            sizes.append(sum(p.numel() for p in frozen))
        sizes.append(sum(p.numel() for p in module.model.parameters() if not p.requires_grad and id(p) not in seen))
        assert counts.largest_unit == max(sizes)


def test_a_transformers_base_without_config_json_is_one_error_naming_the_path(tmp_path):
    from rode_lightning.estimate import main as estimate
    from rode_lightning.user_errors import MissingFileError, UserError

    rode = str(Path(__file__).parents[1] / "configs" / "rode.yaml")
    with pytest.raises(MissingFileError, match=rf"^model\.transformers\.path: {tmp_path} has no config\.json; .*"
                                               r"assumes no shape \(configs/bases/ holds"):
        estimate(["--config", rode, "--model.base", "transformers", "--model.transformers.path", str(tmp_path)])
    with pytest.raises(UserError, match=r"^model\.transformers\.path: not set"):
        estimate(["--config", rode, "--model.base", "transformers"])


def test_text_blocks_of_qwen2_5_vl_and_qwen3_vl_keep_what_the_estimate_says():
    """Grouped key-value heads (kept unrepeated), an explicit head_dim and Qwen3's per-head q/k norms, against
    autograd's saved tensors of a real text decoder block (multimodal rotary positions, sdpa), in bf16."""
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig, Qwen3VLConfig

    text = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=1, num_attention_heads=8,
                num_key_value_heads=2, vocab_size=128, bos_token_id=0, eos_token_id=1, pad_token_id=0)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=256)
    configs = {
        False: Qwen2_5_VLConfig(text_config=dict(text, rope_parameters={
            "rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]}),
            vision_config=dict(vision, fullatt_block_indexes=[0])),
        True: Qwen3VLConfig(text_config=dict(text, head_dim=64, rope_parameters={
            "rope_type": "default", "rope_theta": 5e6, "mrope_section": [12, 10, 10], "mrope_interleaved": True}),
            vision_config=dict(vision, deepstack_visual_indexes=[])),
    }
    for qk_norm, config in configs.items():
        config.get_text_config()._attn_implementation = "sdpa"
        decoder = AutoModelForImageTextToText.from_config(config).to(torch.bfloat16).requires_grad_(False).get_decoder()

        positions = lambda tokens: torch.arange(tokens).view(1, 1, -1).expand(3, 1, -1)  # text: t = h = w
        assert saved_bytes_per_token(decoder.layers[0], decoder.rotary_emb, positions, multimodal=True) == \
            block_activation_bytes(config.get_text_config(), qk_norm)


@pytest.mark.parametrize("name, parameters", [("qwen2.5-vl-7b-instruct", 8_292_166_656),
                                              ("qwen3-vl-8b-instruct", 8_767_123_696)])
def test_the_shipped_bases_are_estimated_from_their_config_json_alone(name, parameters, capsys):
    """configs/bases/ holds config.json only. Built from it the model has the published parameter count (the model
    cards' 8.29B and 8.77B; Qwen3-VL-8B's exact count is its safetensors' total). Under FSDP each GPU holds 1/8 of
    the frozen weights plus two gathered units, the largest being the embedding (vocabulary x hidden)."""
    import json

    from rode_lightning.estimate import main as estimate

    rode = str(Path(__file__).parents[1] / "configs" / "rode.yaml")
    base = ["--config", rode, "--model.base", "transformers", "--model.transformers.path", str(BASES / name)]
    one = estimate(base)["this config"]
    eight = estimate([*base, "--shards", "8"])["this config"]
    printed = capsys.readouterr().out
    assert "FSDP: frozen weights sharded over 8 processes" in printed and "frozen model in bf16" in printed
    text = json.loads((BASES / name / "config.json").read_text())
    text = text.get("text_config", text)
    embedding = text["vocab_size"] * text["hidden_size"]
    # Every weight of the base is frozen in bf16 (rode.yaml: train_projector false); the adapters come on top.
    assert one["memory_gib"]["frozen_weights"] * 2**30 / 2 == parameters
    assert eight["memory_gib"]["frozen_weights"] == pytest.approx(
        one["memory_gib"]["frozen_weights"] / 8 + 2 * embedding * 2 / 2**30, rel=1e-12)
    assert one["memory_gib"]["logits"] == 4 * 2048 * text["vocab_size"] * 10 / 2**30
