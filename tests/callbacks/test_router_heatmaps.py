"""Figure 6 over a whole evaluation split: per-group mean gates equal the gates averaged by hand."""

from __future__ import annotations

import torch

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.inject import adapter_layers, inject_adapters
from rode_lightning.callbacks.router_heatmaps import EvaluationRouting, router_heatmap_figure


def test_split_statistics_equal_the_gates_averaged_by_hand():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 16))
    inject_adapters(model, AdapterConfig(ranks=[2, 4, 8], dropout=0.0, target_modules=["0", "1"]), RoutingContext())
    layers = adapter_layers(model)
    routing = EvaluationRouting({name: 3 for name in layers}, ["recipe", "nutrition", "unifood", "nutrition5k"])
    batches = []
    for rows in (3, 2):
        x = torch.randn(rows, 5, 16)
        mask = torch.ones(rows, 5, dtype=torch.long)
        mask[0, :2] = 0  # left padding
        groups = [["recipe", "unifood"], ["nutrition", "nutrition5k"], ["recipe", "nutrition5k"]][:rows]
        model(x)
        gates = {name: layer.last_gates.clone() for name, layer in layers.items()}
        routing.add(gates, mask, groups)
        batches.append((gates, mask, groups))
    result = routing.as_dict(ranks=[2, 4, 8])
    assert set(result["groups"]) == {"recipe", "nutrition", "unifood", "nutrition5k"}
    for group in result["groups"]:
        for index, name in enumerate(layers):
            chosen = [gates[name].reshape(len(groups), 5, 3)[row][mask[row].bool()]
                      for gates, mask, groups in batches for row in range(len(groups)) if group in groups[row]]
            tokens = torch.cat(chosen)
            torch.testing.assert_close(torch.tensor(result["groups"][group]["mean_gate"][index]),
                                       tokens.double().mean(dim=0).float(), rtol=1e-6, atol=1e-7)
        all_tokens = torch.cat([gates[name].reshape(len(groups), 5, 3)[row][mask[row].bool()]
                                for name in layers for gates, mask, groups in batches
                                for row in range(len(groups)) if group in groups[row]])
        assert result["groups"][group]["sparsity"] == (all_tokens == 0).double().mean().item()
        assert result["groups"][group]["tokens"] == len(all_tokens) // len(layers)

    # Reduction across processes is a sum of these vectors: twice the same split gives the same means.
    doubled = EvaluationRouting(routing.layers, routing.groups)
    doubled.load_vector(routing.to_vector() * 2)
    assert doubled.as_dict([2, 4, 8])["groups"]["recipe"]["mean_gate"] == result["groups"]["recipe"]["mean_gate"]


def test_every_panel_of_the_heatmap_shares_one_colour_scale():
    router = {"layers": ["layers.0.q_proj", "layers.1.q_proj"], "ranks": [2, 4],
              "groups": {"recipe": {"mean_gate": [[0.1, 0.9], [0.0, 0.2]], "sparsity": 0.4, "tokens": 3},
                         "nutrition": {"mean_gate": [[0.3, 0.0], [0.5, 0.4]], "sparsity": 0.2, "tokens": 3}}}
    figure = router_heatmap_figure(router, "test")
    images = [axes.images[0] for axes in figure.axes if axes.images]
    assert len(images) == 2 and all(image.get_clim() == (0.0, 0.9) for image in images)
    assert [axes.get_xlabel() for axes in figure.axes if axes.images] == ["expert (rank)"] * 2
