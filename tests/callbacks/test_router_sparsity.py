"""RouterSparsityMonitor: the statistics by hand, the callback in a tiny trainer (one and two processes), the CLI."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from rode_lightning.adapters.experts import LoRAExperts
from rode_lightning.adapters.layer import MixtureOfLoRALinear
from rode_lightning.adapters.routers import ReLURouter
from rode_lightning.callbacks import RouterSparsityMonitor
from rode_lightning.callbacks.router_sparsity import gate_histogram, gate_statistics, short_layer_names
from rode_lightning.batch import FoodBatch


def read_events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(log_dir.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {log_dir}"
    accumulators = []
    for file in files:
        accumulator = EventAccumulator(str(file), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
        accumulator.Reload()
        accumulators.append(accumulator)
    return accumulators


def merged_tags(accumulators) -> dict[str, set[str]]:
    tags: dict[str, set[str]] = {"scalars": set(), "histograms": set(), "images": set()}
    for accumulator in accumulators:
        for kind in tags:
            tags[kind] |= set(accumulator.Tags()[kind])
    return tags


def scalar(accumulators, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for accumulator in accumulators if tag in accumulator.Tags()["scalars"]
            for event in accumulator.Scalars(tag)]


# --------------------------------------------------------------------------------------------- pure statistics

# Batch of 2 sequences x 3 positions, 3 experts. Row 0 is "category" with its last position padding (gates 9 there,
# which would show in every statistic if padding were counted); row 1 is "recipe".
GATES = torch.tensor([
    [[0.0, 0.5, 1.0], [0.2, 0.0, 0.0], [9.0, 9.0, 0.0]],
    [[0.0, 0.0, 0.0], [1.0, 0.3, 0.0], [0.4, 0.0, 2.0]],
])
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])
TASK_IDS = torch.tensor([[0, 0, 0], [2, 2, 2]])  # 0 = category, 2 = recipe, of 4 tasks


def test_gate_statistics_match_hand_computed_values():
    stats = gate_statistics(GATES.reshape(-1, 3), MASK.reshape(-1), TASK_IDS.reshape(-1), num_tasks=4)
    # Real tokens: (0,0), (0,1), (1,0), (1,1), (1,2) -> 5 tokens, 15 gates.
    assert stats.tokens.item() == 5
    # Zeros per real token: 1 + 2 + 3 + 1 + 1 = 8.
    assert stats.zero_gates.item() == 8
    assert stats.sparsity.item() == pytest.approx(8 / 15)
    # Expert sums over real tokens.
    expected_sums = [0.0 + 0.2 + 0.0 + 1.0 + 0.4, 0.5 + 0.0 + 0.0 + 0.3 + 0.0, 1.0 + 0.0 + 0.0 + 0.0 + 2.0]
    assert stats.gate_sum.tolist() == pytest.approx(expected_sums)
    assert stats.mean_gate.tolist() == pytest.approx([value / 5 for value in expected_sums])
    # Tokens with a positive gate: expert 0: 0.2, 1.0, 0.4; expert 1: 0.5, 0.3; expert 2: 1.0, 2.0.
    assert stats.active_tokens.tolist() == [3, 2, 2]
    assert stats.token_share.tolist() == pytest.approx([3 / 5, 2 / 5, 2 / 5])
    # Per task: category has the 2 real tokens of row 0, recipe the 3 of row 1; the other tasks none.
    assert stats.task_tokens.tolist() == [2, 0, 3, 0]
    assert stats.task_gate_sum[0].tolist() == pytest.approx([0.0 + 0.2, 0.5 + 0.0, 1.0 + 0.0])
    assert stats.task_gate_sum[2].tolist() == pytest.approx([0.0 + 1.0 + 0.4, 0.0 + 0.3 + 0.0, 0.0 + 0.0 + 2.0])
    assert stats.task_gate_sum[[1, 3]].abs().sum().item() == 0
    assert stats.task_mean_gate[2].tolist() == pytest.approx([1.4 / 3, 0.3 / 3, 2.0 / 3])
    assert all(math.isnan(value) for value in stats.task_mean_gate[1].tolist())


def test_statistics_of_parts_add_up_to_those_of_the_whole():
    # What the DDP sum-reduction relies on: rank 0 holds row 0, rank 1 row 1.
    whole = gate_statistics(GATES, MASK, TASK_IDS, num_tasks=4)
    parts = [gate_statistics(GATES[row], MASK[row], TASK_IDS[row], num_tasks=4) for row in range(2)]
    summed = parts[0] + parts[1]
    assert torch.allclose(summed.to_vector(), whole.to_vector())
    assert summed.sparsity.item() == pytest.approx(8 / 15)
    # Averaging the two ranks' ratios instead would be wrong: row 0 has 3/6 zeros, row 1 5/9.
    assert (parts[0].sparsity + parts[1].sparsity).item() / 2 != pytest.approx(8 / 15)


def test_gate_statistics_without_mask_or_tasks_count_everything():
    stats = gate_statistics(GATES)
    assert stats.tokens.item() == 6
    assert stats.zero_gates.item() == 8 + 1  # the padding token has one zero gate
    assert stats.task_tokens.numel() == 0


def test_gate_histogram_counts_by_hand():
    values = torch.tensor([0.0, 0.0, 0.1, 0.5, 0.99, 1.0, 2.0])
    edges, counts = gate_histogram(values, 0.0, 1.0, bins=4)
    assert edges.tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # [0, .25): 0, 0, 0.1; [.25, .5): none; [.5, .75): 0.5; [.75, 1]: 0.99, 1.0; 2.0 is outside.
    assert counts.tolist() == [3, 0, 1, 2]


def test_short_layer_names_are_short_and_unique():
    names = ["model.language_model.model.layers.0.self_attn.q_proj",
             "model.language_model.model.layers.0.mlp.up_proj",
             "model.language_model.model.layers.11.self_attn.q_proj",
             "model.vision.blocks.0.attn.q_proj", "model.other.blocks.0.attn.q_proj"]
    short = short_layer_names(names)
    assert short[names[0]] == "layers.0.q_proj"
    assert short[names[1]] == "layers.0.up_proj"
    assert short[names[2]] == "layers.11.q_proj"
    assert len(set(short.values())) == len(names)
    clash = short_layer_names(["a.layers.0.self_attn.q_proj", "a.layers.0.cross_attn.q_proj"])
    assert len(set(clash.values())) == 2


# ------------------------------------------------------------------------ the callback in a tiny trainer

SEQUENCES = [  # (token ids, task); lengths differ so that batches carry padding
    ([1, 2, 3, 4, 5], "category"),
    ([6, 7], "recipe"),
    ([8, 9, 10, 11], "category"),
    ([12, 13, 14], "ingredients"),
]
PAD = 0


def collate(items):
    length = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), length), PAD)
    mask = torch.zeros((len(items), length), dtype=torch.long)
    for row, (ids, _) in enumerate(items):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        mask[row, :len(ids)] = 1
    return FoodBatch(ids=[str(ids) for ids, _ in items], datasets=["tiny"] * len(items),
                     tasks=[task for _, task in items], prompt_ids=input_ids, prompt_attention_mask=mask,
                     input_ids=input_ids, attention_mask=mask)


class TinyRouted(L.LightningModule):
    """Embeddings -> one ReLU-routed mixture layer; learning rate 0, so the gates are known in advance."""

    def __init__(self, adapted: bool = True, route_in_training: bool = True):
        super().__init__()
        self.route_in_training = route_in_training
        torch.manual_seed(0)
        self.embed = nn.Embedding(16, 8)
        with torch.no_grad():
            self.embed.weight[PAD] = 50.0  # padding would dominate every mean if it were counted
        if adapted:
            self.block = nn.ModuleDict({"q_proj": MixtureOfLoRALinear(
                nn.Linear(8, 8), LoRAExperts(8, 8, [1, 2, 4], alpha=4.0), ReLURouter(8, 3))})
        else:
            self.block = nn.ModuleDict({"q_proj": nn.Linear(8, 8)})

    def forward(self, input_ids):
        return self.block["q_proj"](self.embed(input_ids))

    def training_step(self, batch, batch_idx):
        if not self.route_in_training:
            return self.embed(batch.input_ids).pow(2).mean()
        return self(batch.input_ids).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def tiny_trainer(tmp_path: Path, callback: RouterSparsityMonitor, logger, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=logger, callbacks=[callback], enable_progress_bar=False,
                     enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path, **kwargs)


def expected_statistics(model: TinyRouted, items) -> dict[str, float]:
    """The logged values, computed directly from the layer's gates on the real tokens of ``items``."""
    batch = collate(items)
    layer = model.block["q_proj"]
    with torch.no_grad():
        gates = layer.router(model.embed(batch.input_ids))
    real = gates[batch.attention_mask.bool()]
    values = {"sparsity": (real == 0).float().mean().item()}
    for expert in range(real.shape[1]):
        values[f"mean_gate/expert_{expert}"] = real[:, expert].mean().item()
        values[f"token_share/expert_{expert}"] = (real[:, expert] > 0).float().mean().item()
    return values


def assert_logged_like_expected(accumulators, expected: dict[str, float], step: int) -> None:
    for key, value in expected.items():
        logged = dict(scalar(accumulators, f"router/block.q_proj/{key}"))
        assert logged, f"router/block.q_proj/{key} was not logged"
        assert logged[step] == pytest.approx(value, abs=1e-5), key


def test_callback_logs_statistics_of_real_tokens_histograms_and_heatmaps(tmp_path):
    model = TinyRouted()
    callback = RouterSparsityMonitor(every_n_steps=2)
    trainer = tiny_trainer(tmp_path, callback, TensorBoardLogger(tmp_path, name="tiny"), max_steps=4)
    trainer.fit(model, DataLoader(SEQUENCES, batch_size=2, collate_fn=collate))
    accumulators = read_events(tmp_path)
    tags = merged_tags(accumulators)
    # Steps 2 and 4 only; step 2 ends on the second batch (sequences 2 and 3), step 4 too (epoch 2).
    assert [step for step, _ in scalar(accumulators, "router/block.q_proj/sparsity")] == [2, 4]
    assert_logged_like_expected(accumulators, expected_statistics(model, SEQUENCES[2:]), step=2)
    assert "router/block.q_proj/gates" in tags["histograms"]
    # That batch holds category and ingredients tokens, and recipe only in the steps that are not logged.
    assert {"router/heatmap/category", "router/heatmap/ingredients"} <= tags["images"]
    assert "router/heatmap/recipe" not in tags["images"]
    histogram = next(acc.Histograms("router/block.q_proj/gates") for acc in accumulators
                     if "router/block.q_proj/gates" in acc.Tags()["histograms"])[0].histogram_value
    assert histogram.num == 7 * 3  # real tokens of sequences 2 and 3, times 3 experts
    assert sum(histogram.bucket) == histogram.num


def test_other_loggers_get_the_scalars_only_with_one_warning(tmp_path):
    class RecordingLogger(Logger):
        name, version = "recording", 0
        calls: list[tuple[int, dict]] = []

        @property
        def experiment(self):
            return None

        def log_metrics(self, metrics, step=None):
            self.calls.append((step, dict(metrics)))

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    logger = RecordingLogger()
    with pytest.warns(UserWarning, match="no TensorBoard logger") as record:
        tiny_trainer(tmp_path, RouterSparsityMonitor(every_n_steps=1), logger, max_steps=2).fit(
            TinyRouted(), DataLoader(SEQUENCES, batch_size=2, collate_fn=collate))
    assert sum("no TensorBoard logger" in str(warning.message) for warning in record) == 1
    router_calls = [(step, metrics) for step, metrics in logger.calls if "router/block.q_proj/sparsity" in metrics]
    assert [step for step, _ in router_calls] == [1, 2]
    assert all(0.0 <= metrics["router/block.q_proj/sparsity"] <= 1.0 for _, metrics in router_calls)


def test_without_mixture_layers_it_warns_once_and_logs_nothing(tmp_path):
    with pytest.warns(UserWarning, match="no mixture-of-experts adapter layer"):
        tiny_trainer(tmp_path, RouterSparsityMonitor(every_n_steps=1), TensorBoardLogger(tmp_path, name="plain"),
                     max_steps=2).fit(TinyRouted(adapted=False), DataLoader(SEQUENCES, batch_size=2,
                                                                             collate_fn=collate))
    tags = merged_tags(read_events(tmp_path))
    assert not any(tag.startswith("router/") for kind in tags.values() for tag in kind)


def test_gates_left_by_an_earlier_forward_are_not_logged(tmp_path):
    model = TinyRouted(route_in_training=False)
    # Stale gates of the shape the first batch would give (2 sequences x 5 positions), e.g. from validation.
    model.block["q_proj"].last_gates = torch.ones(2 * 5, 3)
    tiny_trainer(tmp_path, RouterSparsityMonitor(every_n_steps=1), TensorBoardLogger(tmp_path, name="stale"),
                 max_steps=2).fit(model, DataLoader(SEQUENCES, batch_size=2, collate_fn=collate))
    tags = merged_tags(read_events(tmp_path))
    assert not any(tag.startswith("router/") for kind in tags.values() for tag in kind)


def test_every_n_steps_must_be_positive():
    with pytest.raises(ValueError, match="every_n_steps"):
        RouterSparsityMonitor(every_n_steps=0)


@pytest.mark.skipif(sys.platform == "win32" or not torch.distributed.is_available()
                    or not torch.distributed.is_gloo_available(), reason="needs fork and the gloo backend")
def test_two_processes_log_the_statistics_of_the_global_batch(tmp_path):
    """DDP (gloo, 2 forked CPU processes, so no second import of the stack): each rank sees 2 of the 4 sequences;
    the logged values are those of all 4."""
    model = TinyRouted()
    trainer = tiny_trainer(tmp_path, RouterSparsityMonitor(every_n_steps=1), TensorBoardLogger(tmp_path, name="ddp"),
                           max_steps=1, devices=2, strategy="ddp_fork")
    trainer.fit(model, DataLoader(SEQUENCES, batch_size=2, collate_fn=collate))
    accumulators = read_events(tmp_path)
    assert_logged_like_expected(accumulators, expected_statistics(model, SEQUENCES), step=1)
    # Rank zero alone would have seen sequences 0 and 2 (DistributedSampler without shuffling): it differs.
    alone = expected_statistics(model, SEQUENCES[0::2])
    everything = expected_statistics(model, SEQUENCES)
    assert any(alone[key] != pytest.approx(everything[key], abs=1e-5) for key in everything)
    histogram = next(acc.Histograms("router/block.q_proj/gates") for acc in accumulators
                     if "router/block.q_proj/gates" in acc.Tags()["histograms"])[0].histogram_value
    assert histogram.num == (5 + 2 + 4 + 3) * 3


# ------------------------------------------------------------------------------------- the real CLI model

def test_cli_fit_logs_router_statistics_for_every_adapted_layer(cli_demo_dir, tmp_path):
    from rode_lightning.cli import main
    from tests.conftest import tiny_cli_args

    log_dir = tmp_path / "logs"
    # configs/demo.yaml already has the monitor as its last callback; this sets its interval.
    cli = main(["fit", *tiny_cli_args(cli_demo_dir, log_dir,
                                      "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0",
                                      "--trainer.callbacks.every_n_steps=1")])
    assert cli.trainer.global_step == 2
    monitors = [callback for callback in cli.trainer.callbacks if isinstance(callback, RouterSparsityMonitor)]
    assert len(monitors) == 1 and monitors[0].every_n_steps == 1
    layers = [name for name, module in cli.model.named_modules() if isinstance(module, MixtureOfLoRALinear)]
    assert layers
    short = short_layer_names(layers)
    assert len(set(short.values())) == len(layers)

    accumulators = read_events(log_dir)
    tags = merged_tags(accumulators)
    for name in short.values():
        sparsity = scalar(accumulators, f"router/{name}/sparsity")
        assert sorted(step for step, _ in sparsity) == [1, 2], name
        assert all(0.0 <= value <= 1.0 for _, value in sparsity), name
        experts = cli.model.get_submodule(next(n for n in layers if short[n] == name)).num_experts
        for expert in range(experts):
            assert f"router/{name}/mean_gate/expert_{expert}" in tags["scalars"]
            share = scalar(accumulators, f"router/{name}/token_share/expert_{expert}")
            assert share and all(0.0 <= value <= 1.0 for _, value in share)
        assert f"router/{name}/gates" in tags["histograms"]
    heatmaps = {tag for tag in tags["images"] if tag.startswith("router/heatmap/")}
    assert heatmaps and heatmaps <= {f"router/heatmap/{task}" for task in
                                     ("category", "ingredients", "recipe", "nutrition")}


def test_a_batch_of_another_type_is_refused_not_ignored(tmp_path):
    """A dict batch would once have turned the statistics off without a word."""

    class DictBatches(TinyRouted):
        def training_step(self, batch, batch_idx):
            return self(batch["input_ids"]).pow(2).mean()

    def dict_collate(items):
        batch = collate(items)
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "tasks": batch.tasks}

    trainer = tiny_trainer(tmp_path, RouterSparsityMonitor(every_n_steps=1), TensorBoardLogger(tmp_path, name="t"),
                           max_steps=1)
    with pytest.raises(TypeError, match="reads a rode_lightning.batch.FoodBatch; the loader gave a dict"):
        trainer.fit(DictBatches(), DataLoader(SEQUENCES, batch_size=2, collate_fn=dict_collate))
