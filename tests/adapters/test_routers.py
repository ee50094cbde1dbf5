"""Top-1 (LLaVA-MoLE) and cluster (MoCLE) routing against their papers' formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.experts import LoRAExperts
from rode_lightning.adapters.inject import adapter_layers, inject_adapters
from rode_lightning.adapters.layer import MixtureOfLoRALinear
from rode_lightning.adapters.routers import ClusterRouter, Top1Router, load_balancing_loss

D_IN, D_OUT = 12, 10


def top1_layer(ranks, alpha=16.0):
    context = RoutingContext()
    layer = MixtureOfLoRALinear(nn.Linear(D_IN, D_OUT), LoRAExperts(D_IN, D_OUT, ranks, alpha),
                                Top1Router(D_IN, len(ranks), context))
    nn.init.normal_(layer.experts.lora_B)
    return layer, context


def test_top1_equals_eq3_to_5_scaled_by_the_chosen_probability():
    ranks, alpha = [8, 8, 8, 8], 16.0
    layer, _ = top1_layer(ranks, alpha)
    x = torch.randn(2, 6, D_IN)
    out = layer(x)
    router = layer.router.weight.detach()
    for i in range(2):
        for t in range(6):
            token = x[i, t]
            scores = router @ token
            k = int(scores.argmax())  # Eq. 3
            a, b = (tensor.detach() for tensor in layer.experts.expert(k))
            probability = torch.softmax(scores, dim=0)[k]
            expected = layer.base(token) + probability * alpha / ranks[k] * (b @ (a @ token))  # Eq. 4-5
            torch.testing.assert_close(out[i, t], expected, rtol=1e-5, atol=1e-5)


def test_top1_runs_only_the_chosen_expert_and_matches_dense_reference():
    layer, _ = top1_layer([2, 4, 8, 16])
    x = torch.randn(5, 7, D_IN)
    gates = layer.router(x)
    assert torch.all((gates > 0).sum(-1) == 1)
    torch.testing.assert_close(layer.experts(x, gates), layer.experts.reference_forward(x, gates),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("idle_expert", [False, True], ids=["all-experts-used", "one-expert-idle"])
def test_top1_gradients_match_the_dense_reference(idle_expert):
    """Backward through the fused execution (every expert's columns, zero gates but the chosen one's) gives the
    per-expert loop's gradients for the input, the experts and the router; also when an expert gets no token."""
    layer, _ = top1_layer([2, 4, 8, 16])
    if idle_expert:
        with torch.no_grad():
            layer.router.linear.weight[1] = layer.router.linear.weight[0]  # ties go to the first: 1 never wins
    gradients = []
    for forward in (layer.experts, layer.experts.reference_forward):
        x = torch.randn(3, 6, D_IN, generator=torch.Generator().manual_seed(1), requires_grad=True)
        gates = layer.router(x)
        if idle_expert:
            assert not (gates[..., 1] > 0).any()
        (forward(x, gates) * torch.linspace(-1, 1, D_OUT)).sum().backward()
        gradients.append({"x": x.grad, **{name: parameter.grad.clone() for name, parameter in layer.named_parameters()
                                          if not name.startswith("base.")}})  # the frozen layer is not run here
        layer.zero_grad()
    fused, loop = gradients
    assert fused.keys() == loop.keys() and "router.linear.weight" in fused
    for name in loop:
        torch.testing.assert_close(fused[name], loop[name], rtol=1e-5, atol=1e-6, msg=name)


def test_top1_gradient_reaches_the_router():
    layer, _ = top1_layer([8, 8, 8, 8])
    layer(torch.randn(4, 5, D_IN)).square().sum().backward()
    assert layer.router.weight.grad is not None
    assert layer.router.weight.grad.abs().sum() > 0


def test_load_balancing_loss_on_a_hand_made_example():
    # 3 real tokens and 1 padding token, 2 experts.
    probabilities = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    chosen = torch.tensor([0, 0, 1, 1])
    mask = torch.tensor([True, True, True, False])
    # Eq. 7-8 over the real tokens: c = (2, 1), p = (1.7, 1.3); normalised by N = 3 each.
    expected = (2 * 1.7 + 1 * 1.3) / 9
    assert load_balancing_loss(probabilities, chosen, mask).item() == pytest.approx(expected)
    # Without the mask the padding token would count: c = (2, 2), p = (2.2, 1.8), N = 4.
    assert load_balancing_loss(probabilities, chosen, None).item() == pytest.approx((2 * 2.2 + 2 * 1.8) / 16)


def test_top1_layer_records_load_balancing_loss_with_padding_excluded():
    layer, context = top1_layer([8, 8])
    x = torch.randn(2, 4, D_IN)
    context.token_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    layer.train()
    layer(x)
    probabilities = torch.softmax(x @ layer.router.weight.detach().t(), dim=-1)
    real = probabilities[context.token_mask]
    counts = torch.bincount(real.argmax(-1), minlength=2).float()
    expected = (counts / 5 * real.sum(0) / 5).sum()
    torch.testing.assert_close(layer.aux_loss.detach(), expected)
    layer.aux_loss.backward()
    assert layer.router.weight.grad.abs().sum() > 0


def cluster_model(num_experts=3, cluster_dim=6):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj = nn.Linear(D_IN, D_IN), nn.Linear(D_IN, D_IN)

    model = nn.ModuleDict({"a": Block(), "b": Block()})
    context = RoutingContext()
    config = AdapterConfig(method="cluster", ranks=[4] * num_experts, universal_rank=2)
    inject_adapters(model, config, context, cluster_dim=cluster_dim)
    for layer in adapter_layers(model).values():
        nn.init.normal_(layer.experts.lora_B)
    return model, context, config


def test_cluster_gates_follow_mocle_eq1_and_eq3():
    model, context, config = cluster_model()
    layer = adapter_layers(model)["a.q_proj"]
    layer.eval()  # no noise
    features = torch.randn(2, 6)
    context.cluster_features = features
    x = torch.randn(2, 5, D_IN)
    out = layer(x)
    probabilities = torch.softmax(features @ layer.router.weight.detach().t() / config.cluster_temperature, dim=-1)
    for sample in range(2):
        e = int(probabilities[sample].argmax())
        g_max = probabilities[sample, e]
        a_e, b_e = (t.detach() for t in layer.experts.expert(e))
        a_u, b_u = (t.detach() for t in layer.experts.expert(3))  # universal expert
        for t in range(5):
            token = x[sample, t]
            expected = (layer.base(token) + g_max * 16 / 4 * (b_e @ (a_e @ token))
                        + (1 - g_max) * 16 / 2 * (b_u @ (a_u @ token)))
            torch.testing.assert_close(out[sample, t], expected, rtol=1e-5, atol=1e-5)


def test_cluster_routing_is_per_sample_and_the_same_for_every_token_and_layer_input():
    model, context, _ = cluster_model()
    model.eval()
    context.cluster_features = torch.randn(3, 6)
    for layer in adapter_layers(model).values():
        x = torch.randn(3, 7, D_IN)
        gates = layer.router(x)
        assert torch.equal(gates, gates[:, :1].expand_as(gates))  # same for every token of a sample
        # A different layer input gives the same gates: routing depends on the cluster only.
        assert torch.equal(gates, layer.router(torch.randn(3, 7, D_IN)))
        assert torch.all((gates[..., :-1] > 0).sum(-1) == 1)  # top-1 among the cluster experts
        torch.testing.assert_close(gates[..., :-1].sum(-1) + gates[..., -1], torch.ones(3, 7))


def test_cluster_noise_only_in_training():
    router = ClusterRouter(6, 4, temperature=1.0)
    features = torch.randn(2, 6)
    router.eval()
    assert torch.equal(router.sample_gates(features), router.sample_gates(features))
    router.train()
    assert not torch.equal(router.sample_gates(features), router.sample_gates(features))


def test_cluster_router_without_cluster_ids_explains():
    router = ClusterRouter(6, 4)
    with pytest.raises(RuntimeError, match="call the model with cluster_ids"):
        router(torch.randn(2, 3, D_IN))


def test_idle_top1_expert_still_gets_a_gradient_tensor_so_ddp_needs_no_unused_parameter_search():
    layer, _ = top1_layer([4, 4])
    with torch.no_grad():
        layer.router.linear.weight.zero_()  # equal scores: argmax picks expert 0 for every token
    layer(torch.randn(3, 5, D_IN)).sum().backward()
    assert int((layer.last_gates[:, 1] > 0).sum()) == 0  # expert 1 idle
    for name, parameter in layer.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, f"{name} would be an unused parameter under DDP"
    a_grad = layer.experts.lora_A.grad
    assert a_grad[4:].abs().sum() == 0 and a_grad[:4].abs().sum() > 0
