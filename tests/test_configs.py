"""Every adapter variant in configs/variants trains the demo from configuration alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rode_lightning.adapters.inject import adapter_layers
from rode_lightning.cli import main
from tests.conftest import tiny_cli_args

VARIANTS = sorted((Path(__file__).parents[1] / "configs" / "variants").glob("*.yaml"))


def test_the_paper_ablation_variants_are_all_there():
    names = {path.stem for path in VARIANTS}
    assert {"lora_r8", "lora_r32", "top1_8x4", "softmax_8x4", "rode_8x4", "softmax_2468", "rode_2468",
            "rode_5x4", "rode_2_4_8_16", "cluster_8x4"} <= names


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda path: path.stem)
def test_variant_trains_a_few_steps(cli_demo_dir, tmp_path, variant):
    expected = yaml.safe_load(variant.read_text())["model"]["adapter"]
    cli = main(["fit", *tiny_cli_args(cli_demo_dir, tmp_path / "logs", "--trainer.limit_train_batches", "2",
                                      "--trainer.limit_val_batches", "1", "--trainer.max_epochs", "1",
                                      "--config", str(variant))])
    config = cli.model.adapter_config
    assert config.method == expected["method"] and config.ranks == expected["ranks"]
    # The base config's other adapter keys survive the variant's partial override.
    assert config.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert cli.trainer.global_step == 2
    layers = adapter_layers(cli.model.model.language_model)
    if config.method == "lora":
        assert not layers
    else:
        extra = 1 if config.method == "cluster" else 0
        assert all(layer.num_experts == len(config.ranks) + extra for layer in layers.values())
    # fit leaves an adapter-only checkpoint that loads back into a fresh model.
    assert (Path(cli.trainer.log_dir) / "adapter" / "adapter.safetensors").is_file()
