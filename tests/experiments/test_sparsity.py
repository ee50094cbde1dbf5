"""RoDE with ReMoE's controlled sparsity: the coefficient's rule, and a small run that reaches its target."""

from __future__ import annotations

import pytest
import torch

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.inject import adapter_layers, inject_adapters
from rode_lightning.adapters.sparsity import SparsityController, gate_counts


def test_the_coefficient_is_multiplied_below_the_target_and_divided_above():
    controller = SparsityController(target=0.75, coefficient=1e-8, rate=1.2)
    assert controller.update(0.5) == pytest.approx(1.2e-8)
    assert controller.update(0.7) == pytest.approx(1.44e-8)
    assert controller.update(0.75) == pytest.approx(1.2e-8)  # at the target: ease off
    assert controller.update(0.9) == pytest.approx(1e-8)
    restored = SparsityController(0.1)
    restored.load_state_dict(controller.state_dict())
    assert restored == controller


def test_only_rode_takes_a_sparsity_target():
    with pytest.raises(ValueError, match="only method 'rode'"):
        AdapterConfig(method="softmax", ranks=[8, 8], sparsity_target=0.5)
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        AdapterConfig(sparsity_target=1.0)


def test_a_small_run_reaches_its_target_sparsity():
    """Four experts, target 0.75 (about one active expert per token): after warming the coefficient up, the
    sparsity of the last 50 steps stays within 0.05 of the target."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.GELU(), torch.nn.Linear(32, 32))
    model.requires_grad_(False)
    config = AdapterConfig(ranks=[2, 4, 8, 16], dropout=0.0, target_modules=["0", "2"], sparsity_target=0.75)
    inject_adapters(model, config, RoutingContext())
    layers = list(adapter_layers(model).values())
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-2)
    controller = SparsityController(config.sparsity_target)
    teacher = torch.nn.Linear(32, 32)
    history = []
    for _ in range(400):
        x = torch.randn(64, 32)
        loss = torch.nn.functional.mse_loss(model(x), teacher(x).detach())
        penalty = torch.stack([layer.aux_loss for layer in layers]).mean()
        optimizer.zero_grad()
        (loss + controller.coefficient * penalty).backward()
        optimizer.step()
        zeros, total = gate_counts(layers).tolist()
        history.append(zeros / total)
        controller.update(zeros / total)
    assert history[0] < 0.6  # it starts far from the target
    recent = history[-50:]
    assert abs(sum(recent) / len(recent) - 0.75) < 0.05, recent[-10:]
