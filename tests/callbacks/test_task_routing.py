"""Routing per task over one kind of token: the statistics equal gates averaged by hand over those positions only,
the divergence equals scipy's Jensen-Shannon, and the permutation baseline is reproducible for a seed."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.inject import adapter_layers, inject_adapters
from rode_lightning.callbacks.router_heatmaps import task_routing_figure
from rode_lightning.callbacks.router_sparsity import RouterSparsityMonitor
from rode_lightning.callbacks.task_routing import (KINDS, KindSums, TaskRouting, divergence_summary, expert_shares,
                                                   kind_sums, permutation_divergences, task_divergence)
from rode_lightning.model.generation import Generated

TASKS = ["category", "ingredients", "recipe", "nutrition"]


def _batches():
    """Two batches through a small model with two RoDE layers: gates, real-token and answer masks, tasks."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 16))
    inject_adapters(model, AdapterConfig(ranks=[2, 4, 8], dropout=0.0, target_modules=["0", "1"]), RoutingContext())
    layers = adapter_layers(model)
    batches = []
    for rows, tasks in ((3, ["recipe", "category", "recipe"]), (2, ["nutrition", "category"])):
        x = torch.randn(rows, 6, 16)
        real = torch.ones(rows, 6, dtype=torch.bool)
        real[0, 4:] = False  # right padding
        answer = torch.zeros(rows, 6, dtype=torch.bool)
        answer[:, 2:5] = True
        model(x)
        gates = [layer.last_gates.reshape(rows, 6, 3).clone() for layer in layers.values()]
        batches.append((gates, real, answer & real, tasks))
    return list(layers), batches


def test_answer_token_statistics_equal_gates_averaged_by_hand_over_the_answer_positions():
    layers, batches = _batches()
    routing = TaskRouting(layers, 3, TASKS, ["unifood"])
    for gates, real, answer, tasks in batches:
        routing.add({"answer": kind_sums(gates, answer), "all": kind_sums(gates, real)}, tasks,
                    ["unifood"] * len(tasks))
    summary = routing.summary(draws=20, seed=0)
    assert set(summary) == {"answer", "all"}  # no image or generated tokens were given
    for task in ("recipe", "category", "nutrition"):
        group = summary["answer"]["groups"][task]
        for index in range(len(layers)):
            tokens = torch.cat([gates[index][row][answer[row]] for gates, _, answer, tasks in batches
                                for row in range(len(tasks)) if tasks[row] == task]).double()
            torch.testing.assert_close(torch.tensor(group["mean_gate"][index], dtype=torch.float64),
                                       tokens.mean(dim=0))
            active = tokens[tokens.sum(dim=1) > 0]
            by_hand = (active / active.sum(dim=1, keepdim=True)).mean(dim=0)
            torch.testing.assert_close(torch.tensor(group["mean_share"][index], dtype=torch.float64), by_hand)
            assert group["silent_tokens"][index] == len(tokens) - len(active)
        assert group["tokens"] == len(tokens)
        everything = torch.cat([gates[i][row][answer[row]] for gates, _, answer, tasks in batches
                                for i in range(len(layers)) for row in range(len(tasks)) if tasks[row] == task])
        assert group["sparsity"] == pytest.approx((everything == 0).double().mean().item())
    # The answer alone is fewer tokens than the whole conversation, and the dataset is a group too.
    assert summary["answer"]["groups"]["recipe"]["tokens"] < summary["all"]["groups"]["recipe"]["tokens"]
    assert summary["all"]["groups"]["unifood"]["samples"] == 5
    figure = task_routing_figure({"layers": layers, "ranks": [2, 4, 8], "kinds": summary}, "test")
    images = [axes.images[0] for axes in figure.axes if axes.images]
    assert len(images) == 2 * 3  # two kinds x three tasks with tokens, on one colour scale
    largest = max(v for kind in summary.values() for group in kind["groups"].values() for row in group["mean_share"]
                  for v in row if v is not None)
    assert all(image.get_clim() == (0.0, largest) for image in images)


def test_shares_make_each_token_a_distribution_and_count_silent_tokens():
    gates = torch.tensor([[0.0, 2.0, 2.0], [0.0, 0.0, 0.0], [0.3, 0.0, 0.0]])
    shares, active = expert_shares(gates)
    torch.testing.assert_close(shares, torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
                                                    dtype=torch.float64))
    assert active.tolist() == [True, False, True]
    # Top-1 gates (the chosen expert's probability, zeros elsewhere) become the selection frequency.
    top1 = torch.tensor([[[0.7, 0.0], [0.0, 0.4], [0.9, 0.0]]])
    sums = kind_sums([top1], torch.ones(1, 3, dtype=torch.bool))
    assert (sums.share_sum[0, 0] / sums.active[0, 0]).tolist() == pytest.approx([2 / 3, 1 / 3])


def test_divergence_equals_the_jensen_shannon_of_scipy_and_entropy_by_hand():
    generator = torch.Generator().manual_seed(3)
    share_sum = torch.rand(6, 2, 3, generator=generator, dtype=torch.float64)
    active = torch.ones(6, 2, dtype=torch.float64)  # one token per sample, so shares are per-sample means
    share_sum = share_sum / share_sum.sum(dim=-1, keepdim=True)
    two = torch.tensor([0, 0, 0, 1, 1, 1])
    observed = task_divergence(share_sum, active, two, 2)
    for layer in range(2):
        p, q = share_sum[:3, layer].mean(dim=0).numpy(), share_sum[3:, layer].mean(dim=0).numpy()
        assert float(observed[layer]) == pytest.approx(jensenshannon(p, q, base=2) ** 2)
    three = torch.tensor([0, 1, 2, 0, 1, -1])  # -1: a sample without a task, left out
    observed = task_divergence(share_sum, active, three, 4)  # task 3 has no sample: not one of the weights
    for layer in range(2):
        means = [share_sum[[i for i in range(6) if three[i] == k], layer].mean(dim=0).numpy() for k in range(3)]
        by_hand = entropy(sum(means) / 3, base=2) - sum(entropy(m, base=2) for m in means) / 3
        assert float(observed[layer]) == pytest.approx(by_hand)
    assert math.isnan(float(task_divergence(share_sum, active, torch.tensor([0, 0, 0, 0, 0, -1]), 2)[0]))


def test_the_permutation_baseline_is_reproducible_for_a_seed_and_tells_real_differences_from_noise():
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1] * 20)
    # Layer 0 routes by task (task 0 to expert 0, task 1 to expert 1, with noise); layer 1 ignores the task.
    noise = torch.rand(40, 2, 2, generator=generator, dtype=torch.float64) * 0.6
    share_sum = noise.clone()
    share_sum[:, 0, 0] += (labels == 0).double()
    share_sum[:, 0, 1] += (labels == 1).double()
    share_sum = share_sum / share_sum.sum(dim=-1, keepdim=True)
    active = torch.ones(40, 2, dtype=torch.float64)
    first = permutation_divergences(share_sum, active, labels, 2, draws=50, seed=7)
    assert torch.equal(first, permutation_divergences(share_sum, active, labels, 2, draws=50, seed=7))
    assert not torch.equal(first, permutation_divergences(share_sum, active, labels, 2, draws=50, seed=8))
    sums = KindSums(torch.ones(40, dtype=torch.float64), active, torch.zeros(40, 2, dtype=torch.float64),
                    share_sum, share_sum)
    summary = divergence_summary(sums, labels, 2, draws=200, seed=0)
    assert summary == divergence_summary(sums, labels, 2, draws=200, seed=0)
    assert summary["exceeds"][0] and summary["p_value"][0] == pytest.approx(1 / 201)
    assert summary["divergence"][0] > summary["baseline_95"][0] > 0
    assert summary["divergence"][1] < summary["divergence"][0] and summary["samples"] == 40
    # Every labelling of identical samples has the same (zero) divergence: never above the baseline.
    same = KindSums(torch.ones(40, dtype=torch.float64), active, torch.zeros(40, 2, dtype=torch.float64),
                    share_sum[:1].expand(40, -1, -1), share_sum[:1].expand(40, -1, -1))
    assert divergence_summary(same, labels, 2, draws=20)["exceeds"] == [False, False]


def test_the_generated_tokens_are_the_gates_the_generation_recorded():
    """The callback's ``generated`` sums: each row's recorded gates over its own generated tokens only."""
    monitor = RouterSparsityMonitor()
    monitor._generation_names = {"model.layers.0.q_proj": "layers.0.q_proj"}
    generator = torch.Generator().manual_seed(1)
    rows = [torch.rand(length, 3, generator=generator) for length in (4, 1, 3)]
    generated = [Generated(list(range(len(gates))), "stop", {"model.layers.0.q_proj": gates}) for gates in rows]
    sums = monitor._generated_sums(generated, ["layers.0.q_proj"], 3)
    for row, gates in enumerate(rows):
        assert sums.tokens[row] == len(gates)
        torch.testing.assert_close(sums.gate_sum[row, 0], gates.double().sum(dim=0))
        torch.testing.assert_close(sums.share_sum[row, 0], (gates / gates.sum(dim=1, keepdim=True)).double().sum(0))


def test_routing_rows_gathered_from_processes_summarise_like_one_process():
    """The summary reads only the stacked rows: two halves stacked equal the whole (how DDP ranks combine)."""
    layers, batches = _batches()
    whole = TaskRouting(layers, 3, TASKS, ["unifood"])
    halves = [TaskRouting(layers, 3, TASKS, ["unifood"]) for _ in batches]
    for half, (gates, real, answer, tasks) in zip(halves, batches):
        for routing in (whole, half):
            routing.add({kind: kind_sums(gates, real) for kind in KINDS}, tasks, ["unifood"] * len(tasks))
    stacked = torch.cat([half.matrix() for half in halves])
    assert whole.summary(draws=10) == whole.summary(stacked, draws=10)
