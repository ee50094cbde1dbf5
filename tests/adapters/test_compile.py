"""The adapted layers trace into one graph under ``torch.compile``: no host synchronisation (top-1 used to read its
per-expert token counts back with ``.tolist()``), no data-dependent shapes (padding is weighted out of the auxiliary
losses, not indexed out). Counted with ``torch._dynamo.explain``, which traces without compiling, on the CPU.

The cases run in one fresh process: after dynamo has run, a later test's fork-based DDP (tests/callbacks) cannot run
backward in the forked children ("autograd's threading in combination with fork-based multiprocessing")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rode_lightning.adapters import AdapterConfig, add_adapters, auxiliary_loss, routing_context

WIDTH = 32


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(WIDTH, WIDTH)
        self.k_proj = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_proj(x) * self.k_proj(x)


CONFIGS = {
    "rode": dict(method="rode", ranks=[2, 4, 8, 16]),
    "rode_sparse": dict(method="rode", ranks=[4, 4], sparsity_target=0.5),  # ReMoE's L1 term and gate counts
    "rode_no_dropout": dict(method="rode", ranks=[2, 4], dropout=0.0),
    "softmax": dict(method="softmax", ranks=[8, 8]),
    "top1": dict(method="top1", ranks=[8, 8, 8, 8]),
    "cluster": dict(method="cluster", ranks=[4, 4], num_clusters=3),
}


def trace(settings: dict) -> dict:
    """Graph breaks and graphs of one training step of an adapted block, and whether the traced step computes what
    the eager one does (the cluster router's training noise aside)."""
    torch.manual_seed(0)
    config = AdapterConfig(**settings)
    model = Block()
    needs_clusters = config.adapter_method.needs_cluster_features
    add_adapters(model, config, cluster_dim=8 if needs_clusters else None)
    context = routing_context(model)
    x = torch.randn(2, 5, WIDTH)
    context.token_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    if needs_clusters:
        context.cluster_features = torch.randn(2, 8)
    model.train()

    def step(inputs: torch.Tensor) -> torch.Tensor:
        loss = model(inputs).square().mean()
        extra = auxiliary_loss(model)
        return loss if extra is None else loss + extra

    explanation = torch._dynamo.explain(step)(x)
    same = None
    if not needs_clusters:
        torch.manual_seed(1)
        eager = step(x)
        torch.manual_seed(1)
        same = bool(torch.allclose(torch.compile(step, backend="eager")(x), eager))
    return {"graph_breaks": explanation.graph_break_count, "graphs": explanation.graph_count,
            "reasons": [str(reason) for reason in explanation.break_reasons], "same_as_eager": same}


def trace_all() -> dict:
    """:func:`trace` of every case in turn, dynamo's caches cleared before each, so that no case reuses another's
    graphs."""
    traced = {}
    for name, settings in CONFIGS.items():
        torch._dynamo.reset()
        traced[name] = trace(settings)
    return traced


@pytest.fixture(scope="module")
def traces() -> dict:
    """Every case traced in one fresh process (each in its own took ~13 s here, mostly starting the interpreter)."""
    code = "import json; from tests.adapters.test_compile import trace_all; print(json.dumps(trace_all()))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_an_adapted_layer_traces_without_a_graph_break_in_training(traces, name):
    traced = traces[name]
    assert traced["graph_breaks"] == 0, traced["reasons"]
    assert traced["graphs"] == 1
    assert traced["same_as_eager"] in ((None,) if name == "cluster" else (True,))
