"""Which strategies get the checkpoint IO that reads sharded folders and writes complete files. Reading real folders
is tested on FSDP runs in tests/test_scale.py; writes cut halfway in tests/test_atomic.py."""

from __future__ import annotations

import torch
from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from rode_lightning.scale.sharded_checkpoint import TrainingCheckpointIO, install_checkpoint_io, is_sharded_checkpoint
from rode_lightning.scale.strategy import AdapterFSDPStrategy


def test_strategies_with_lightnings_checkpoint_io_get_ours():
    for strategy in (SingleDeviceStrategy(torch.device("cpu")), DDPStrategy(), AdapterFSDPStrategy()):
        assert type(strategy.checkpoint_io) is TorchCheckpointIO
        install_checkpoint_io(strategy)
        assert isinstance(strategy.checkpoint_io, TrainingCheckpointIO)


def test_a_checkpoint_io_of_the_users_own_is_left_alone():
    user_io = AsyncCheckpointIO()
    ddp = DDPStrategy(checkpoint_io=user_io)
    install_checkpoint_io(ddp)
    assert ddp.checkpoint_io is user_io


def test_a_plain_file_is_read_as_before(tmp_path):
    path = tmp_path / "step.ckpt"
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "global_step": 7}, path)
    assert not is_sharded_checkpoint(path) and not is_sharded_checkpoint(tmp_path)
    checkpoint = TrainingCheckpointIO().load_checkpoint(path)
    assert checkpoint["global_step"] == 7 and torch.equal(checkpoint["state_dict"]["w"], torch.arange(3.0))
