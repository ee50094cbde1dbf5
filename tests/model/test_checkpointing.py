"""Training checkpoints: only the trainable state, exact resume (at an epoch boundary, mid-epoch, with gradient
accumulation, with LoRA dropout on), and the stop at a non-finite loss.

A checkpoint written at step k by an uninterrupted run is exactly what a run killed right after step k leaves on
disk (same configuration, same state), so each resume test resumes from the uninterrupted run's own checkpoints and
compares what follows batch by batch: the samples seen, the loss, and at the end every trainable tensor, bit for bit.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.callbacks.nonfinite import NonFiniteLossError
from rode_lightning.cli import main
from rode_lightning.data.resumable import ResumableSampler
from rode_lightning.model.module import FoodLMMModule
from tests.conftest import tiny_cli_args

BATCHES_PER_EPOCH = 4


class BatchRecorder(Callback):
    """The loss and sample ids of every training batch, by (epoch, batch index in the epoch)."""

    def __init__(self):
        self.batches: dict[tuple[int, int], tuple[float, tuple[str, ...]]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches[(trainer.current_epoch, batch_idx)] = (outputs["loss"].item(), tuple(batch.ids))


def fit(demo_dir: Path, log_dir: Path, *extra: str):
    """A tiny run of 4 batches per epoch without validation, a checkpoint after every optimizer step."""
    args = tiny_cli_args(demo_dir, log_dir, "--trainer.limit_train_batches", str(BATCHES_PER_EPOCH),
                         "--trainer.limit_val_batches", "0",
                         "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                         "--trainer.callbacks.every_n_train_steps", "1", "--trainer.callbacks.save_top_k", "-1",
                         "--trainer.callbacks+=tests.model.test_checkpointing.BatchRecorder", *extra)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = main(["fit", *args])
    cli.warnings = [str(warning.message) for warning in caught]
    cli.recorded = next(callback for callback in cli.trainer.callbacks if isinstance(callback, BatchRecorder))
    return cli


def checkpoints(log_dir: Path) -> dict[int, Path]:
    """Every checkpoint a run wrote, by optimizer step."""
    return {int(re.search(r"step=(\d+)", path.name).group(1)): path for path in log_dir.rglob("*.ckpt")}


def trainable(module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in module.named_parameters()
            if parameter.requires_grad}


@pytest.fixture(scope="module")
def uninterrupted(cli_demo_dir, tmp_path_factory):
    """6 optimizer steps: all of epoch 0 (4 batches), half of epoch 1; LoRA dropout 0.05 (the demo's) is on."""
    log_dir = tmp_path_factory.mktemp("uninterrupted")
    cli = fit(cli_demo_dir, log_dir, "--trainer.max_steps", "6")
    assert cli.model.adapter_config.dropout > 0
    assert sorted(checkpoints(log_dir)) == [1, 2, 3, 4, 5, 6]
    return cli, log_dir


def assert_resumes_exactly(full, log_dir: Path, cli_demo_dir: Path, tmp_path: Path, step: int, *extra: str):
    resumed = fit(cli_demo_dir, tmp_path / "logs", *extra, "--ckpt_path", str(checkpoints(log_dir)[step]))
    assert resumed.trainer.global_step == full.trainer.global_step
    assert not [message for message in resumed.warnings if "not resumable" in message], resumed.warnings
    # The resumed run trained on exactly the batches the uninterrupted one trained on after `step`, with the same
    # samples in the same order and the same loss.
    assert resumed.recorded.batches
    assert resumed.recorded.batches == {key: value for key, value in full.recorded.batches.items()
                                        if key in resumed.recorded.batches}
    last = max(full.recorded.batches)
    assert last in resumed.recorded.batches
    expected, got = trainable(full.model), trainable(resumed.model)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    return resumed


def test_resume_at_an_epoch_boundary_is_exact(uninterrupted, cli_demo_dir, tmp_path):
    full, log_dir = uninterrupted
    resumed = assert_resumes_exactly(full, log_dir, cli_demo_dir, tmp_path, 4, "--trainer.max_steps", "6")
    assert sorted(resumed.recorded.batches) == [(1, 0), (1, 1)]


@pytest.mark.parametrize("step", [2, 5], ids=["epoch0", "epoch1"])
def test_resume_mid_epoch_is_exact(uninterrupted, cli_demo_dir, tmp_path, step):
    full, log_dir = uninterrupted
    resumed = assert_resumes_exactly(full, log_dir, cli_demo_dir, tmp_path, step, "--trainer.max_steps", "6")
    # Only the rest of the epoch: Lightning continues at batch `step`, the loader skipped the batches before it.
    assert min(resumed.recorded.batches) == divmod(step, BATCHES_PER_EPOCH)


def test_resume_mid_epoch_with_gradient_accumulation_is_exact(cli_demo_dir, tmp_path):
    accumulate = ("--trainer.accumulate_grad_batches", "2", "--trainer.max_steps", "4")  # 2 steps per epoch
    full = fit(cli_demo_dir, tmp_path / "full", *accumulate)
    assert full.trainer.global_step == 4 and sorted(checkpoints(tmp_path / "full")) == [1, 2, 3, 4]
    resumed = assert_resumes_exactly(full, tmp_path / "full", cli_demo_dir, tmp_path / "resumed", 3, *accumulate)
    assert sorted(resumed.recorded.batches) == [(1, 2), (1, 3)]


def test_checkpoint_holds_only_the_trainable_state_and_restores_it_exactly(uninterrupted):
    full, log_dir = uninterrupted
    path = checkpoints(log_dir)[6]
    saved = torch.load(path, weights_only=True)  # plain tensors and values only
    names = {name for name, parameter in full.model.named_parameters() if parameter.requires_grad}
    assert set(saved["state_dict"]) == names
    assert any(".experts." in name for name in names) and any(".projector." in name for name in names)
    assert {"optimizer_states", "lr_schedulers", "loops", "rng_states"} <= set(saved)
    whole_model = sum(tensor.numel() * tensor.element_size() for tensor in full.model.state_dict().values())
    assert path.stat().st_size < whole_model / 2

    # Into a freshly built module (its frozen demo weights come from the same seed as the run's): same outputs.
    L.seed_everything(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*frozen weights.*")
        fresh = FoodLMMModule.load_from_checkpoint(path)
    batch = next(iter(full.datamodule.train_dataloader()))
    inputs = (batch.input_ids, batch.attention_mask, batch.pixel_values)
    full.model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh.model(*inputs), full.model.model(*inputs))

    # Other frozen weights (here the demo's random language model from another seed) are pointed out.
    L.seed_everything(1)
    with pytest.warns(UserWarning, match="frozen weights of this model differ from those the checkpoint was trained"):
        FoodLMMModule.load_from_checkpoint(path)

    # A checkpoint of other adapters is refused, naming the tensors that do not fit.
    other = FoodLMMModule(vision=full.model.vision_config, language=full.model.language_config,
                          adapter=AdapterConfig(method="lora", ranks=[4], target_modules=["q_proj"]))
    with pytest.raises(ValueError, match=r"checkpoint does not fit the model: missing trainable tensors: "
                                         r"model\..*lora_A.*; tensors the model does not have: model\..*experts"):
        other.load_state_dict(saved["state_dict"])


def test_non_finite_loss_stops_before_the_update_and_keeps_the_last_good_checkpoint(cli_demo_dir, tmp_path,
                                                                                    monkeypatch):
    answer_loss = FoodLMMModule.answer_loss

    def poisoned_at_step_3(self, batch):
        loss = answer_loss(self, batch)
        return loss * float("nan") if self.trainer.training and self.global_step == 3 else loss

    monkeypatch.setattr(FoodLMMModule, "answer_loss", poisoned_at_step_3)
    log_dir = tmp_path / "logs"
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at step 3 \(epoch 0, batch 3 of the epoch\)"
                                                 r".*last checkpoint.*epoch=0-step=3\.ckpt") as error:
        fit(cli_demo_dir, log_dir, "--trainer.max_steps", "6")
    assert "no weight was updated" in str(error.value)
    assert sorted(checkpoints(log_dir)) == [1, 2, 3]  # nothing written with or after the NaN
    last = torch.load(checkpoints(log_dir)[3], weights_only=True)
    assert last["global_step"] == 3 and all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_sampler_order_follows_seed_and_epoch_and_shares_an_epoch_between_processes():
    dataset = list(range(10))
    sampler = ResumableSampler(dataset, seed=3)
    first, second = list(sampler), list(sampler)  # without set_epoch: the next epoch's order
    assert sorted(first) == sorted(second) == dataset and first != second
    sampler.set_epoch(0)
    assert list(sampler) == first
    shares = [list(ResumableSampler(dataset, seed=3, num_replicas=3, rank=rank)) for rank in range(3)]
    assert all(len(share) == 4 for share in shares)  # 10 samples padded to 12
    assert set(sum(shares, [])) == set(dataset)
    weighted = ResumableSampler(dataset, seed=3, weights=[0.0] * 9 + [1.0])
    assert list(weighted) == [9] * 10


def test_mocle_checkpoint_and_adapter_load_without_the_data_module(cli_demo_dir, tmp_path):
    """MoCLE's cluster embedding is as wide as the instruction encoder (here TF-IDF + SVD, narrower than the 64 a
    model built without the data's centroids starts with): load_from_checkpoint and a module given the adapter
    directory take the saved width and the saved values."""
    cli = fit(cli_demo_dir, tmp_path, "--model.adapter.method", "cluster", "--model.adapter.num_clusters", "2",
              "--trainer.max_steps", "2")
    trained = trainable(cli.model)
    width = trained["model.cluster_embedding"].shape[1]
    assert width != 64

    L.seed_everything(0)  # the demo's frozen weights
    from_checkpoint = FoodLMMModule.load_from_checkpoint(checkpoints(tmp_path)[2])
    L.seed_everything(0)
    from_adapter = FoodLMMModule(vision=cli.model.vision_config, language=cli.model.language_config,
                                 adapter=cli.model.adapter_config,
                                 adapter_path=str(Path(cli.trainer.log_dir) / "adapter"))
    from_adapter.configure_model()
    for module in (from_checkpoint, from_adapter):
        loaded = trainable(module)
        assert loaded.keys() == trained.keys()
        for name, tensor in trained.items():
            assert torch.equal(loaded[name], tensor), name
