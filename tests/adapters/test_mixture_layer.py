"""The mixture layer against independent computations of the RoDE paper's formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.experts import LoRAExperts
from rode_lightning.adapters.inject import inject_adapters
from rode_lightning.adapters.layer import MixtureOfLoRALinear
from rode_lightning.adapters.routers import ReLURouter, SoftmaxRouter

D_IN, D_OUT = 12, 10


def make_layer(ranks, router_class, alpha=16.0, dropout=0.0):
    base = nn.Linear(D_IN, D_OUT)
    layer = MixtureOfLoRALinear(base, LoRAExperts(D_IN, D_OUT, ranks, alpha, dropout),
                                router_class(D_IN, len(ranks)))
    return layer


def random_weights(ranks):
    """Independent random A_i, B_i (non-zero B), router W_h and base W0, b0."""
    generator = torch.Generator().manual_seed(1)
    a = [torch.randn(r, D_IN, generator=generator) for r in ranks]
    b = [torch.randn(D_OUT, r, generator=generator) for r in ranks]
    router = torch.randn(len(ranks), D_IN, generator=generator)
    w0, b0 = torch.randn(D_OUT, D_IN, generator=generator), torch.randn(D_OUT, generator=generator)
    return a, b, router, w0, b0


def load(layer, a, b, router, w0, b0):
    with torch.no_grad():
        layer.experts.lora_A.copy_(torch.cat(a, dim=0))
        layer.experts.lora_B.copy_(torch.cat(b, dim=1))
        layer.router.linear.weight.copy_(router)
        layer.base.weight.copy_(w0)
        layer.base.bias.copy_(b0)


@pytest.mark.parametrize("ranks", [[2, 4, 8, 16], [8, 8, 8, 8], [3], [2, 4, 6, 8]])
def test_rode_layer_equals_eq2_per_expert(ranks):
    alpha = 16.0
    layer = make_layer(ranks, ReLURouter, alpha)
    a, b, router, w0, b0 = random_weights(ranks)
    load(layer, a, b, router, w0, b0)
    x = torch.randn(3, 5, D_IN)

    # Eq. 2: x' = W0 x + sum_i alpha / r_i * max(h_i(x), 0) * B_i A_i x, computed token by token.
    expected = torch.empty(3, 5, D_OUT)
    for i in range(3):
        for t in range(5):
            token = x[i, t]
            value = w0 @ token + b0
            for expert, rank in enumerate(ranks):
                gate = max(float(router[expert] @ token), 0.0)
                value = value + alpha / rank * gate * (b[expert] @ (a[expert] @ token))
            expected[i, t] = value
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-4)


def test_softmax_layer_equals_eq1():
    ranks, alpha = [8, 8, 8, 8], 16.0
    layer = make_layer(ranks, SoftmaxRouter, alpha)
    a, b, router, w0, b0 = random_weights(ranks)
    load(layer, a, b, router, w0, b0)
    x = torch.randn(7, D_IN)
    probabilities = torch.softmax(x @ router.t(), dim=-1)
    expected = x @ w0.t() + b0
    for expert, rank in enumerate(ranks):
        expected = expected + alpha / rank * probabilities[:, expert:expert + 1] * (x @ a[expert].t() @ b[expert].t())
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-4)


def test_relu_gates_are_sparse_and_recorded():
    layer = make_layer([2, 4, 8, 16], ReLURouter)
    x = torch.randn(4, 6, D_IN)
    layer(x)
    gates = layer.last_gates
    assert gates.shape == (24, 4)
    torch.testing.assert_close(gates, torch.relu(x.reshape(24, D_IN) @ layer.router.weight.t()))
    assert (gates == 0).any() and (gates > 0).any()


def test_zero_initialised_b_gives_the_base_output():
    layer = make_layer([2, 4, 8, 16], ReLURouter)
    assert torch.count_nonzero(layer.experts.lora_B) == 0
    assert torch.count_nonzero(layer.experts.lora_A) > 0
    x = torch.randn(5, D_IN)
    torch.testing.assert_close(layer(x), layer.base(x), rtol=0, atol=0)


def test_fused_equals_reference_forward_and_gradients():
    layer = make_layer([2, 4, 8, 16], ReLURouter)
    nn.init.normal_(layer.experts.lora_B)
    x = torch.randn(9, D_IN)
    gates = torch.relu(torch.randn(9, 4, requires_grad=True))
    fused = layer.experts(x, gates)
    fused_grads = torch.autograd.grad(fused.square().sum(), [layer.experts.lora_A, layer.experts.lora_B])
    reference = layer.experts.reference_forward(x, gates)
    reference_grads = torch.autograd.grad(reference.square().sum(), [layer.experts.lora_A, layer.experts.lora_B])
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
    for got, want in zip(fused_grads, reference_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_expert_views_have_paper_shapes_and_scaling():
    experts = LoRAExperts(D_IN, D_OUT, [2, 4, 8, 16], alpha=16)
    assert [tuple(experts.expert(i)[0].shape) for i in range(4)] == [(r, D_IN) for r in (2, 4, 8, 16)]
    assert [tuple(experts.expert(i)[1].shape) for i in range(4)] == [(D_OUT, r) for r in (2, 4, 8, 16)]
    assert experts.scaling == [8.0, 4.0, 2.0, 1.0]


class TwoBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"q_proj": nn.Linear(8, 8), "k_proj": nn.Linear(8, 8), "v_proj": nn.Linear(8, 8)})
            for _ in range(2))


@pytest.mark.parametrize("targets, expected", [
    (["q_proj", "k_proj"], {"blocks.0.q_proj", "blocks.0.k_proj", "blocks.1.q_proj", "blocks.1.k_proj"}),
    (["q_proj", "v_proj"], {"blocks.0.q_proj", "blocks.0.v_proj", "blocks.1.q_proj", "blocks.1.v_proj"}),
    ([r"blocks\.1\..*_proj"], {"blocks.1.q_proj", "blocks.1.k_proj", "blocks.1.v_proj"}),
])
def test_injection_by_name_patterns(targets, expected):
    model = TwoBlocks()
    names = inject_adapters(model, AdapterConfig(target_modules=targets))
    assert set(names) == expected
    adapted = {name for name, module in model.named_modules() if isinstance(module, MixtureOfLoRALinear)}
    assert adapted == expected


def test_pattern_matching_nothing_names_the_pattern():
    with pytest.raises(ValueError, match=r"'o_proj' matches no linear layer.*k_proj, q_proj, v_proj"):
        inject_adapters(TwoBlocks(), AdapterConfig(target_modules=["q_proj", "o_proj"]))


@pytest.mark.parametrize("kwargs, message", [
    ({"ranks": []}, r"adapter.ranks: the list of expert ranks is empty"),
    ({"ranks": [4, 0]}, r"adapter.ranks: every rank must be a positive integer, got \[0\]"),
    ({"method": "lora", "ranks": [4, 8]}, r"method 'lora' takes exactly one rank"),
    ({"dropout": 1.5}, r"adapter.dropout"),
    ({"target_modules": []}, r"adapter.target_modules: empty"),
])
def test_bad_adapter_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(**kwargs)


def test_peft_lora_is_injected_for_method_lora():
    model = TwoBlocks()
    inject_adapters(model, AdapterConfig(method="lora", ranks=[4], target_modules=["q_proj"]))
    names = [name for name, _ in model.named_parameters() if "lora_" in name]
    assert any("blocks.0.q_proj.lora_A" in name for name in names)
    assert not any("k_proj" in name for name in names)


@pytest.mark.parametrize("method", ["rode", "softmax", "top1"])
def test_the_router_folded_into_the_experts_matmul_computes_the_two_matmul_layer(method):
    """Without active dropout the layer stacks ``W_router`` under ``A`` (one matmul reads x), in training as in
    inference: the same output, gates, auxiliary loss and gradients (x, A, B, W_router) as router then experts."""
    from rode_lightning.adapters.context import RoutingContext
    from rode_lightning.adapters.inject import adapter_layers, inject_adapters

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 24))
    config = AdapterConfig(method=method, ranks=[2, 4, 8], dropout=0.0, target_modules=["0"],
                           sparsity_target=0.5 if method == "rode" else None)
    inject_adapters(model, config, RoutingContext())
    layer = adapter_layers(model)["0"].train()
    with torch.no_grad():
        layer.experts.lora_B.normal_()
    x = torch.randn(3, 5, 24, requires_grad=True)
    assert layer._router_folds_into_experts(x)
    weights = [x, layer.experts.lora_A, layer.experts.lora_B, layer.router.linear.weight]
    probe = torch.linspace(-1, 1, 24)

    def outputs_and_gradients(forward):
        out = forward(x)
        aux = layer.aux_loss
        loss = (out * probe).sum() + (aux if aux is not None else 0)
        return out, layer.last_gates, aux, torch.autograd.grad(loss, weights)

    folded = outputs_and_gradients(layer)
    two_matmuls = outputs_and_gradients(lambda inputs: layer.base(inputs) + layer.experts(
        inputs, _kept_gates(layer, layer.router(inputs))))
    assert (folded[2] is None) == (method == "softmax")
    for got, want in zip(folded[:3], two_matmuls[:3]):
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(folded[3], two_matmuls[3]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(layer.eval()(x), folded[0].detach(), rtol=1e-5, atol=1e-6)


def _kept_gates(layer, gates):
    layer.last_gates = gates.detach().reshape(-1, gates.shape[-1])
    return gates


def test_the_fold_refuses_weights_that_are_not_gathered(monkeypatch):
    import rode_lightning.adapters.experts as experts_module

    layer = make_layer([2, 4], ReLURouter)
    monkeypatch.setattr(experts_module, "is_dtensor", lambda tensor: tensor is layer.router.linear.weight)
    with pytest.raises(RuntimeError, match="one FSDP unit"):
        layer.experts.forward_routed(torch.randn(2, D_IN), layer.router)


def test_without_gradients_in_training_mode_dropout_still_applies_and_the_router_is_not_folded():
    """The fold computes the router and the experts from the same x, so it must not run where the experts see
    dropout(x): a no-grad forward in training mode gives the two-matmul layer's output for the same dropout mask."""
    torch.manual_seed(0)
    layer = make_layer([2, 4, 8], ReLURouter, dropout=0.5).train()
    nn.init.normal_(layer.experts.lora_B)
    x = torch.randn(6, D_IN)
    with torch.no_grad():
        assert layer._router_folds_into_experts(x) is False
        torch.manual_seed(1)
        got = layer(x)
        torch.manual_seed(1)
        expected = layer.base(x) + layer.experts(x, layer.router(x))
        assert not torch.allclose(got, layer.eval()(x))  # the mask mattered
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


GROUPED_IN, GROUPED_OUT = 16, 24  # grouped_mm wants 16-byte strides


def _top1_gates(tokens: int, experts: int, idle: int) -> torch.Tensor:
    """Top-1 router gates (softmax probability of the chosen expert, zero elsewhere) with expert ``idle`` unused."""
    from rode_lightning.adapters.routers import Top1Router

    logits = torch.randn(tokens, experts)
    logits[:, idle] = -1e4
    return Top1Router(GROUPED_IN, experts).gates_from_logits(logits.requires_grad_())


def test_grouped_top1_experts_equal_the_per_expert_reference_in_outputs_and_gradients():
    """forward_grouped (torch.nn.functional.grouped_mm; on the CPU its portable loop) against the expert-by-expert
    mixture: the output and the gradients of x, A, B and the gates, with an expert that gets no token."""
    torch.manual_seed(0)
    experts = LoRAExperts(GROUPED_IN, GROUPED_OUT, [8, 8, 8, 8], alpha=16.0)
    nn.init.normal_(experts.lora_B)
    x = torch.randn(3, 7, GROUPED_IN, requires_grad=True)
    logits = torch.randn(3, 7, 4)
    logits[..., 2] = -1e4  # expert 2 idle: an empty group
    from rode_lightning.adapters.routers import Top1Router

    logits.requires_grad_()
    gates = Top1Router(GROUPED_IN, 4).gates_from_logits(logits)
    inputs = [x, experts.lora_A, experts.lora_B, logits]
    grouped = experts.forward_grouped(x, gates)
    grouped_grads = torch.autograd.grad((grouped * torch.linspace(-1, 1, GROUPED_OUT)).sum(), inputs,
                                        retain_graph=True)  # the gates' graph is shared
    reference = experts.reference_forward(x, gates)
    reference_grads = torch.autograd.grad((reference * torch.linspace(-1, 1, GROUPED_OUT)).sum(), inputs)
    assert grouped.shape == (3, 7, GROUPED_OUT)
    torch.testing.assert_close(grouped, reference, rtol=1e-5, atol=1e-5)
    for got, want in zip(grouped_grads, reference_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert torch.count_nonzero(grouped_grads[1][16:24]) == 0  # the idle expert's A gets no gradient


def test_on_the_cpu_top1_keeps_the_dense_product():
    """grouped_mm has no fused kernel on the CPU (it loops and reads the offsets back to the host): the layer keeps
    the dense path there, and with experts of different ranks anywhere."""
    from rode_lightning.adapters.experts import grouped_kernel_serves

    assert not grouped_kernel_serves(torch.device("cpu"), torch.bfloat16)
    assert not grouped_kernel_serves(torch.device("cpu"), torch.float32)
    experts = LoRAExperts(GROUPED_IN, GROUPED_OUT, [8, 8, 8, 8], alpha=16.0)
    x = torch.randn(5, GROUPED_IN)
    assert not experts.groups_tokens(x)
    nn.init.normal_(experts.lora_B)
    gates = _top1_gates(5, 4, idle=1).detach()
    torch.testing.assert_close(experts(x, gates, one_expert_per_token=True), experts(x, gates), rtol=0, atol=0)


def test_grouped_execution_is_chosen_only_with_the_kernel_and_equal_ranks_that_are_multiples_of_8(monkeypatch):
    import rode_lightning.adapters.experts as experts_module

    monkeypatch.setattr(experts_module, "grouped_kernel_serves", lambda device, dtype: True)
    x = torch.randn(5, GROUPED_IN)
    assert LoRAExperts(GROUPED_IN, GROUPED_OUT, [8, 8, 8, 8], 16.0).groups_tokens(x)
    assert not LoRAExperts(GROUPED_IN, GROUPED_OUT, [2, 4, 8, 16], 16.0).groups_tokens(x)  # RoDE's diverse ranks
    assert not LoRAExperts(GROUPED_IN, GROUPED_OUT, [4, 4], 16.0).groups_tokens(x)  # rank 4: not 16-byte aligned in bf16
    assert not LoRAExperts(12, GROUPED_OUT, [8, 8], 16.0).groups_tokens(torch.randn(5, 12))  # d_in 12 neither
    dense_only = LoRAExperts(GROUPED_IN, GROUPED_OUT, [8, 8], 16.0)
    dense_only.allow_grouped = False
    assert not dense_only.groups_tokens(x)
    # The layer hands top-1's gates to the grouped path, and then does not fold the router in inference.
    calls = []
    experts = LoRAExperts(GROUPED_IN, GROUPED_OUT, [8, 8, 8, 8], 16.0)
    monkeypatch.setattr(experts, "forward_grouped", lambda x, gates: calls.append(gates) or torch.zeros(5, GROUPED_OUT))
    from rode_lightning.adapters.routers import Top1Router

    layer = MixtureOfLoRALinear(nn.Linear(GROUPED_IN, GROUPED_OUT), experts, Top1Router(GROUPED_IN, 4))
    layer(x)
    with torch.no_grad():
        assert not layer._router_folds_into_experts(x)
        layer(x)
    assert len(calls) == 2
    softmax_layer = MixtureOfLoRALinear(nn.Linear(GROUPED_IN, GROUPED_OUT), experts, SoftmaxRouter(GROUPED_IN, 4))
    softmax_layer(x)
    assert len(calls) == 2  # several non-zero gates per token: dense


@pytest.mark.parametrize("autocast", [False, True])
def test_column_gates_scale_each_experts_gate_over_its_own_columns_exactly(autocast):
    """Each expert's gate times ``alpha / r_i`` on that expert's columns, exactly the product of the two (one matmul
    with an expansion matrix, whose other terms are zeros), and in fp32 under bf16 autocast as outside it."""
    ranks, alpha = [2, 3, 5], 7.0
    experts = LoRAExperts(D_IN, D_OUT, ranks, alpha)
    gates = torch.rand(4, 6, len(ranks), generator=torch.Generator().manual_seed(3))
    gates[0, 0] = 0.0
    if autocast:
        gates = gates.to(torch.bfloat16)
    expected = torch.cat([gates[..., i:i + 1].float().expand(*gates.shape[:-1], rank) * (alpha / rank)
                          for i, rank in enumerate(ranks)], dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        columns = experts.column_gates(gates)
    assert columns.dtype == torch.float32
    assert torch.equal(columns, expected)
