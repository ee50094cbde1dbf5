"""README.md's library example ("Use the adapters in your own training code"), run as it stands, and the public
API it uses on a plain transformers LLaMA with a plain PyTorch loop."""

import re
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import rode_lightning.adapters as adapters
from rode_lightning.adapters.layer import MixtureOfLoRALinear

README = Path(__file__).parents[2] / "README.md"
HEADING = "### Use the adapters in your own training code"


def _readme_example() -> str:
    text = README.read_text()
    section = text[text.index(HEADING):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_example_trains_saves_and_loads_an_adapter(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_readme_example(), str(README), "exec"), namespace)
    model, fresh, tokens, llama = namespace["model"], namespace["fresh"], namespace["tokens"], namespace["llama"]
    # Trained: the loss fell below the frozen base's (the adapters start as the base, B = 0).
    torch.manual_seed(0)
    base = LlamaForCausalLM(llama)
    with torch.no_grad():
        base_loss = base(input_ids=tokens, labels=tokens).loss.item()
    assert namespace["loss"].item() < base_loss - 0.1
    # Only the adapters trained; the loaded copy computes what the trained model computes.
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".experts." in name or ".router." in name for name in trainable)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=tokens).logits, fresh(input_ids=tokens).logits)
    assert (tmp_path / "my_adapter" / "adapter.safetensors").is_file()
    printed = capsys.readouterr().out
    assert "model.layers.0.self_attn.q_proj" in printed and "loss after 20 steps" in printed


def _tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4))


@pytest.mark.parametrize("method", ["rode", "softmax", "top1", "lora"])
def test_add_adapters_adapts_the_targets_and_freezes_the_rest(method):
    model = _tiny_llama()
    ranks = [8] if method == "lora" else [2, 4]
    names = adapters.add_adapters(model, adapters.AdapterConfig(method=method, ranks=ranks, target_modules=["v_proj"]))
    assert names == ["model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.v_proj"]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("v_proj" in name for name in trainable)
    layers = adapters.adapter_layers(model)
    if method == "lora":
        assert layers == {} and adapters.routing_context(model) is None
    else:
        assert set(layers) == set(names) and all(isinstance(layer, MixtureOfLoRALinear) for layer in layers.values())
        assert isinstance(adapters.routing_context(model), adapters.RoutingContext)


def test_auxiliary_loss_is_the_mean_of_the_layers_load_balancing_losses():
    model = _tiny_llama()
    adapters.add_adapters(model, adapters.AdapterConfig(method="top1", ranks=[2, 2, 2], target_modules=["q_proj"]))
    model.train()
    model(input_ids=torch.randint(0, 64, (2, 5)))
    losses = [layer.router.last_aux_loss for layer in adapters.adapter_layers(model).values()]
    assert len(losses) == 2
    assert torch.equal(adapters.auxiliary_loss(model), torch.stack(losses).mean())
    rode = _tiny_llama()
    adapters.add_adapters(rode, adapters.AdapterConfig(method="rode", ranks=[2, 2], target_modules=["q_proj"]))
    rode(input_ids=torch.randint(0, 64, (2, 5)))
    assert adapters.auxiliary_loss(rode) is None


def test_an_adapter_of_another_config_is_refused_by_name(tmp_path):
    model = _tiny_llama()
    config = adapters.AdapterConfig(method="rode", ranks=[2, 4], target_modules=["q_proj"])
    adapters.add_adapters(model, config)
    adapters.save_adapter(model, config, tmp_path)
    other = _tiny_llama()
    other_config = adapters.AdapterConfig(method="rode", ranks=[4, 4], target_modules=["q_proj"])
    adapters.add_adapters(other, other_config)
    with pytest.raises(ValueError, match=r"ranks: checkpoint \[2, 4\], model \[4, 4\]"):
        adapters.load_adapter(other, other_config, tmp_path)
