from __future__ import annotations


import pytest
import torch
from safetensors.torch import load_file, save_file

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.saving import CONFIG_NAME, WEIGHTS_NAME, load_adapter, save_adapter
from tests.model.test_lmm import batch, build


def trained_like(model):
    """Give every trainable tensor non-default values, as training would."""
    with torch.no_grad():
        for parameter in model.trainable_parameters().values():
            parameter.normal_()
    return model


@pytest.mark.parametrize("adapter", [
    AdapterConfig(),
    AdapterConfig(method="top1", ranks=[8, 8, 8, 8]),
    AdapterConfig(method="cluster", ranks=[4, 4], num_clusters=3),
    AdapterConfig(method="lora", ranks=[8]),
])
def test_round_trip_reproduces_outputs_exactly(tmp_path, adapter):
    torch.manual_seed(0)
    source = trained_like(build(adapter))
    source.eval()
    input_ids, mask, images = batch(source)
    clusters = torch.tensor([0, 2]) if adapter.method == "cluster" else None
    expected = source(input_ids, mask, images, clusters)
    save_adapter(source, adapter, tmp_path)

    torch.manual_seed(0)  # same frozen base weights, as loading real weights from disk would give
    target = build(adapter)
    target.eval()
    assert not torch.allclose(target(input_ids, mask, images, clusters), expected)
    load_adapter(target, adapter, tmp_path)
    torch.testing.assert_close(target(input_ids, mask, images, clusters), expected, rtol=0, atol=0)
    saved = load_file(tmp_path / WEIGHTS_NAME)
    assert set(saved) == set(source.trainable_parameters())
    assert not any("base" in name and "lora" not in name for name in saved)


def test_checkpoint_with_other_ranks_is_refused(tmp_path):
    save_adapter(build(AdapterConfig(ranks=[2, 4])), AdapterConfig(ranks=[2, 4]), tmp_path)
    with pytest.raises(ValueError, match=r"ranks: checkpoint \[2, 4\], model \[2, 4, 8, 16\]"):
        load_adapter(build(), AdapterConfig(), tmp_path)


def _drop(state, name):
    del state[name]


def _shrink(state, name):
    state[name] = torch.zeros(3, 3)


@pytest.mark.parametrize("name, damage, message", [
    ("language_model.model.layers.1.self_attn.k_proj.experts.lora_A", _drop, "missing tensors {name}"),
    ("projector.layers.0.weight", _shrink, r"{name}: checkpoint \(3, 3\)"),
])
def test_checkpoint_that_does_not_fit_is_refused(tmp_path, name, damage, message):
    save_adapter(build(), AdapterConfig(), tmp_path)
    state = load_file(tmp_path / WEIGHTS_NAME)
    damage(state, name)
    save_file(state, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ValueError, match=message.format(name=name)):
        load_adapter(build(), AdapterConfig(), tmp_path)


def test_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        (tmp_path / WEIGHTS_NAME).write_bytes(b"")
        load_adapter(build(), AdapterConfig(), tmp_path)
