"""One home per method (rode_lightning/adapters/methods/): README's "Adding a method" example, run as it stands,
works through the whole adapter API; the registry refuses a second method of the same name; and no module outside
the methods compares method names."""

import ast
import re
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import rode_lightning
from rode_lightning.adapters import METHODS, add_adapters, adapter_layers, load_adapter, register_method, save_adapter
from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.estimate import adapter_activation_bytes

README = Path(__file__).parents[2] / "README.md"
PACKAGE = Path(rode_lightning.__file__).parent


def _readme_example() -> str:
    text = README.read_text()
    section = text[text.index("### Adding a method"):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def _tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4))


def test_the_readme_method_adapts_a_model_by_its_formula_and_saves(registry, tmp_path):
    namespace: dict = {}
    exec(compile(_readme_example(), str(README), "exec"), namespace)
    config = namespace["config"]
    assert "sigmoid" in registry and config.layer_ranks == [4, 8]
    model = _tiny_llama()
    names = add_adapters(model, config)
    assert names == [f"model.layers.{i}.self_attn.{p}" for p in ("q_proj", "v_proj") for i in range(2)]
    layer = adapter_layers(model)["model.layers.1.self_attn.v_proj"]
    with torch.no_grad():
        layer.experts.lora_B.normal_()  # B starts at zero: make the experts' part visible
    layer.eval()  # no dropout
    x = torch.randn(3, 5, 32)
    # The formula, written out per expert: y = W0 x + sum_i sigmoid(W_r x)_i * alpha / r_i * B_i A_i x.
    gates = torch.sigmoid(x @ layer.router.weight.T)
    expected = layer.base(x)
    for i, rank in enumerate((4, 8)):
        a, b = layer.experts.expert(i)
        expected = expected + gates[..., i:i + 1] * (config.alpha / rank) * (x @ a.T @ b.T)
    torch.testing.assert_close(layer(x), expected)
    # Saved and loaded like a built-in method; a rank-1 sigmoid checkpoint does not load into it.
    save_adapter(model, config, tmp_path / "sigmoid")
    fresh = _tiny_llama()
    add_adapters(fresh, config)
    load_adapter(fresh, config, tmp_path / "sigmoid")
    assert torch.equal(adapter_layers(fresh)["model.layers.1.self_attn.v_proj"].experts.lora_B, layer.experts.lora_B)
    # The estimate reads its memory terms from the method's defaults (a token-routed mixture, no dropout kept).
    assert adapter_activation_bytes(config, [("q_proj", 32, 32)]) == 2 * 32 + 3 * 32 + 6 * 12 + 2 * 2


def test_a_method_name_is_registered_once(registry):
    with pytest.raises(ValueError, match="adapter method 'rode' is already registered"):
        register_method(type(registry["rode"])())


def test_an_unknown_method_is_named_with_the_registered_ones():
    with pytest.raises(ValueError, match="adapter.method: 'moe' is not one of rode, softmax, top1, cluster, lora"):
        AdapterConfig(method="moe")


def _method_name_comparisons(path: Path, root: Path = PACKAGE) -> list[str]:
    """Comparisons (``==``, ``in``, ...) and dictionary keys that name a registered method, as ``file:line``."""
    names = set(METHODS)
    found = []

    def names_a_method(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(names_a_method(element) for element in node.elts)
        return False

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Compare) and any(map(names_a_method, [node.left, *node.comparators])):
            found.append(f"{path.relative_to(root)}:{node.lineno}")
        elif isinstance(node, ast.Dict) and any(key is not None and names_a_method(key) for key in node.keys):
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_module_outside_the_methods_compares_method_names():
    methods_folder = PACKAGE / "adapters" / "methods"
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) if methods_folder not in path.parents
                 for hit in _method_name_comparisons(path)]
    assert offenders == []


def test_the_check_finds_a_method_name_comparison(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('def f(config):\n    return config.method == "cluster" or {"top1": 1}\n'
                      'def g(config):\n    return config.method in ("lora", "x")\n')
    assert sorted(_method_name_comparisons(sample, tmp_path)) == ["sample.py:2", "sample.py:2", "sample.py:4"]
