"""``target_modules`` entries: name suffixes on module-name boundaries (dots included, as in peft), ``re:`` regexes
over the full name, and older regex entries still read as regexes with a warning."""

from __future__ import annotations

import warnings

import pytest
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.inject import find_target_modules, inject_adapters
from rode_lightning.adapters.layer import MixtureOfLoRALinear

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny_llama() -> LlamaForCausalLM:
    """Two decoder blocks, plus a decoy linear layer whose name ends with ``self_attn.q_proj`` without a dot before
    it (``model.extra_self_attn.q_proj``): a plain ``endswith`` or substring test would adapt it too."""
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)
    model = LlamaForCausalLM(config)
    model.model.extra_self_attn = nn.ModuleDict({"q_proj": nn.Linear(16, 16)})
    return model


def no_warnings(model: nn.Module, targets: list[str]) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return find_target_modules(model, targets)


def test_a_dotted_entry_is_a_suffix_on_module_name_boundaries():
    model = tiny_llama()
    names = no_warnings(model, ["self_attn.q_proj"])
    assert names == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    # The undotted entry also takes the decoy, whose leaf is q_proj; the dotted one must not.
    assert "model.extra_self_attn.q_proj" in no_warnings(model, ["q_proj"])
    # A longer dotted suffix, down to the full name, narrows the match.
    assert no_warnings(model, ["1.self_attn.q_proj"]) == ["model.layers.1.self_attn.q_proj"]
    assert no_warnings(model, ["model.layers.0.mlp.down_proj"]) == ["model.layers.0.mlp.down_proj"]


def test_the_dotted_entry_adapts_exactly_those_layers():
    model = tiny_llama()
    inject_adapters(model, AdapterConfig(ranks=[2, 4], target_modules=["self_attn.q_proj"]))
    adapted = {name for name, module in model.named_modules() if isinstance(module, MixtureOfLoRALinear)}
    assert adapted == {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"}
    assert type(model.model.extra_self_attn["q_proj"]) is nn.Linear


def test_a_suffix_must_start_at_a_name_boundary():
    with pytest.raises(ValueError, match=r"pattern 'attn\.q_proj' matches no linear layer"):
        find_target_modules(tiny_llama(), ["attn.q_proj"])


def test_re_prefix_is_a_full_name_regex_without_warning():
    model = tiny_llama()
    names = no_warnings(model, [r"re:model\.layers\.0\..*_proj"])
    assert names == [f"model.layers.0.{'self_attn' if p in PROJECTIONS[:4] else 'mlp'}.{p}" for p in PROJECTIONS]
    # Full name, not a search: the same regex without the leading "model\." matches nothing.
    with pytest.raises(ValueError, match=r"matches no linear layer"):
        no_warnings(model, [r"re:layers\.0\..*_proj"])


def test_an_old_style_regex_still_matches_and_warns_with_the_re_spelling():
    model = tiny_llama()
    old = [r"model\.layers\.1\.self_attn\.[qk]_proj", r".*\.o_proj"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = find_target_modules(model, old)
    assert names == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj",
                     "model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj"]
    messages = [str(warning.message) for warning in caught if issubclass(warning.category, FutureWarning)]
    assert len(messages) == 2  # one per old-style entry
    for entry, message in zip(old, messages):
        # The backslashes as the user wrote them (YAML), not doubled by repr().
        assert f"write it 're:{entry}'" in message
    assert find_target_modules(model, [f"re:{entry}" for entry in old]) == names  # the spelling it suggests


def test_an_entry_matching_nothing_is_refused_with_the_names_there_are():
    with pytest.raises(ValueError) as error:
        find_target_modules(tiny_llama(), ["q_proj", "self_attn.x_proj"])
    message = str(error.value)
    assert "adapter.target_modules: pattern 'self_attn.x_proj' matches no linear layer" in message
    assert "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj" in message
    assert "full names look like 'model.layers.0.self_attn.q_proj'" in message


def test_a_broken_regex_names_the_entry():
    with pytest.raises(ValueError, match=r"adapter.target_modules: 're:\(q_proj' is not a valid regex"):
        find_target_modules(tiny_llama(), ["re:(q_proj"])


def test_all_linear_is_every_linear_layer_but_the_output_layer_as_in_peft():
    from peft import LoraConfig, get_peft_model

    model = tiny_llama()
    ours = no_warnings(model, ["all-linear"])
    linear = {name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    assert set(ours) == linear - {"lm_head"} and "lm_head" in linear
    # peft's own reading of "all-linear" on the same model (an independent implementation).
    peft_model = get_peft_model(tiny_llama(), LoraConfig(target_modules="all-linear", r=2))
    theirs = {name.removeprefix("base_model.model.") for name, module in peft_model.named_modules()
              if hasattr(module, "lora_A") and isinstance(getattr(module, "base_layer", None), nn.Linear)}
    assert set(ours) == theirs


def test_the_adapted_layers_are_described_by_block_ranges():
    from rode_lightning.adapters.inject import describe_adapted_layers

    names = find_target_modules(tiny_llama(), ["q_proj", "self_attn.v_proj", "extra_self_attn.q_proj"])
    text = describe_adapted_layers(names)
    assert text.splitlines() == ["adapted 5 linear layers:",
                                 "  model.layers.{0-1}.self_attn.q_proj (2 layers)",
                                 "  model.extra_self_attn.q_proj",
                                 "  model.layers.{0-1}.self_attn.v_proj (2 layers)"]
    gaps = describe_adapted_layers([f"m.layers.{i}.q_proj" for i in (0, 1, 2, 5, 7, 8)])
    assert gaps.splitlines()[1] == "  m.layers.{0-2,5,7-8}.q_proj (6 layers)"
