"""Adapters under DDP with two CPU processes (gloo), launched the way a user launches them: `python -m rode_lightning`.

Run in a subprocess with a hard timeout: a distributed hang must fail this test, not stall the suite.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.cli_process import run_cli_process
from tests.conftest import printed_results, tiny_cli_args

REPO = Path(__file__).parents[1]


# cluster: 3 Uni-Food dishes and 2 Nutrition5k dishes in val, category and ingredient questions, sorted by
# (dataset, task) and dealt round-robin to 2 ranks in one batch of 3: rank 0 gets n5k/ingredients + 2 x
# unifood/category, rank 1 also a unifood/ingredients sample, so only rank 1 has updated that metric.
UNEVEN_VALIDATION = ["--data.sources", "[{dataset: unifood, demo_sizes: {train: 16, val: 3, test: 3}}, "
                     "{dataset: nutrition5k, demo_sizes: {train: 32, test: 8}}]", "--data.tasks.eval", "[category, ingredients]",
                     "--data.eval_batch_size", "3", "--trainer.limit_val_batches", "1"]


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")
@pytest.mark.parametrize("variant, extra", [("top1", []), ("cluster", UNEVEN_VALIDATION)], ids=["top1", "cluster"])
def test_ddp_trains_sparse_routers_without_unused_parameter_search(cli_demo_dir, tmp_path, variant, extra):
    """Top-1 and cluster routing leave experts idle on a rank; DDP must not fail on them (find_unused_parameters
    stays False because the experts of a layer share their parameters).

    Evaluation batches are grouped by task, so a rank can hold no sample of some (dataset, task) pair: the metrics
    must still be gathered by both ranks (a rank skipping the gather used to hang the run) and reported for the
    whole set."""
    log_dir = tmp_path / "logs"
    data_dir = tmp_path / "data" if extra else cli_demo_dir  # other sizes: not the shared demo data
    args = tiny_cli_args(data_dir, log_dir, "--trainer.limit_train_batches", "2", "--trainer.max_epochs", "1",
                         "--trainer.strategy", "ddp", "--trainer.devices", "2",
                         "--model.adapter.method", variant, "--model.adapter.num_clusters", "4",
                         "--model.adapter.ranks", "[4, 4, 4, 4, 4, 4, 4, 4]", *extra)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = run_cli_process(["fit", *args], tmp_path, env, timeout=480)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "MEMBER: 2/2" in result.stdout, result.stdout[-2000:]
    summary = printed_results(result.stdout + result.stderr, "val")
    expected = ["val/unifood/ingredient_iou", "val/unifood/category_accuracy", "val/nutrition5k/ingredient_iou"]
    if not extra:
        expected += ["val/unifood/recipe_sacrebleu", "val/nutrition5k/pmae_average"]
    for name in expected:
        assert name in summary, summary
    adapter_dir = log_dir / "demo" / "version_0" / "adapter"
    saved = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert saved["adapter"]["method"] == variant


@pytest.mark.parametrize("rank", [0, 1])
def test_one_failing_process_stops_the_run_with_its_message_and_no_hang(cli_demo_dir, tmp_path, rank):
    """The launching process (rank 0) or a child (rank 1) fails mid-epoch: every process ends, within the
    timeout, and stderr shows the failing one's error line, with no traceback of the broken connection."""
    args = tiny_cli_args(cli_demo_dir, tmp_path / "logs", "--trainer.limit_train_batches", "4",
                         "--trainer.max_epochs", "1", "--trainer.strategy", "ddp", "--trainer.devices", "2",
                         "--trainer.callbacks+=tests.fail_on_rank.FailOnRank", f"--trainer.callbacks.rank={rank}")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = run_cli_process(["fit", *args], tmp_path, env, timeout=240)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors and errors[0].startswith(f"error: rank {rank} cannot go on at step 1"), result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
