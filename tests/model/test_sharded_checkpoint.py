"""Which strategies get the sharded-folder reader. Reading real folders is tested on FSDP runs in tests/test_scale.py."""

from __future__ import annotations

import torch
from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from rode_lightning.model.sharded_checkpoint import (ShardedFolderCheckpointIO, is_sharded_checkpoint,
                                                     read_sharded_folders_in)
from rode_lightning.model.strategy import AdapterFSDPStrategy


def test_strategies_reading_through_torch_load_get_the_folder_reader():
    for strategy in (SingleDeviceStrategy(torch.device("cpu")), DDPStrategy()):
        assert type(strategy.checkpoint_io) is TorchCheckpointIO
        read_sharded_folders_in(strategy)
        assert isinstance(strategy.checkpoint_io, ShardedFolderCheckpointIO)


def test_strategies_with_their_own_reading_are_left_alone():
    fsdp = AdapterFSDPStrategy()
    read_sharded_folders_in(fsdp)
    assert fsdp._checkpoint_io is None  # ModelParallelStrategy reads folders itself
    user_io = AsyncCheckpointIO()
    ddp = DDPStrategy(checkpoint_io=user_io)
    read_sharded_folders_in(ddp)
    assert ddp.checkpoint_io is user_io


def test_a_plain_file_is_read_as_before(tmp_path):
    path = tmp_path / "step.ckpt"
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "global_step": 7}, path)
    assert not is_sharded_checkpoint(path) and not is_sharded_checkpoint(tmp_path)
    checkpoint = ShardedFolderCheckpointIO().load_checkpoint(path)
    assert checkpoint["global_step"] == 7 and torch.equal(checkpoint["state_dict"]["w"], torch.arange(3.0))
