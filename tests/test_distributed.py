"""Adapters under DDP with two CPU processes (gloo)."""

from __future__ import annotations

import sys

import pytest
import torch

from rode_lightning.cli import main
from tests.conftest import tiny_cli_args


@pytest.mark.skipif(sys.platform == "win32" or not torch.distributed.is_gloo_available(),
                    reason="needs fork and the gloo backend")
@pytest.mark.parametrize("variant", ["top1", "cluster"])
def test_ddp_trains_sparse_routers_without_unused_parameter_search(cli_demo_dir, tmp_path, variant):
    """Top-1 and cluster routing leave experts idle on a rank; DDP must not fail on them (find_unused_parameters
    stays False because the experts of a layer share their parameters)."""
    cli = main(["fit", *tiny_cli_args(cli_demo_dir, tmp_path / "logs", "--trainer.limit_train_batches", "2",
                                      "--trainer.limit_val_batches", "1", "--trainer.max_epochs", "1",
                                      "--trainer.strategy", "ddp_fork", "--trainer.devices", "2",
                                      "--model.adapter.method", variant, "--model.adapter.num_clusters", "4",
                                      "--model.adapter.ranks", "[4, 4, 4, 4, 4, 4, 4, 4]")])
    assert cli.trainer.world_size == 2
    assert cli.trainer.global_step == 2
    assert "val/ingredient_iou" in cli.trainer.callback_metrics
