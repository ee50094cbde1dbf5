"""The command line on the tiny demo configuration: real parsing, real training, real errors."""

from __future__ import annotations

import pytest
import yaml

from rode_lightning.cli import main
from tests.conftest import tiny_cli_args


def test_fit_few_steps_then_validate_logs_metrics(cli_demo_dir, tmp_path):
    cli = main(["fit", *tiny_cli_args(cli_demo_dir, tmp_path / "logs", "--trainer.limit_train_batches", "3",
                                      "--trainer.max_epochs", "1")])
    assert cli.trainer.global_step == 3
    metrics = cli.trainer.callback_metrics
    assert {"train/loss", "val/loss", "val/ingredient_iou", "val/ingredient_iou_most_frequent"} <= set(metrics)
    events = list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file written"
    trainable = {name for name, p in cli.model.named_parameters() if p.requires_grad}
    assert trainable and all(".experts." in n or ".router." in n or n.startswith("model.projector.")
                             for n in trainable)


def test_validate_subcommand_runs(cli_demo_dir, tmp_path):
    cli = main(["validate", *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--model.vision.patch_size", "16"])
    assert "val/ingredient_iou" in cli.trainer.callback_metrics
    # The data module got its image geometry from model.vision: 64 px / 16 px patches -> 16 image tokens.
    assert cli.datamodule.hparams.num_image_tokens == 16
    assert cli.datamodule.hparams.image_size == 64


def test_print_config_shows_every_section(cli_demo_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["adapter"]["ranks"] == [2, 4, 8, 16]
    assert printed["model"]["tokenizer"] == "demo"
    # Derived keys are set from the model's, not by the user.
    assert "num_image_tokens" not in printed["data"] and "tokenizer" not in printed["data"]


@pytest.mark.parametrize("extra, message", [
    (["--model.adapter.rank", "[8]"], "rank"),
    (["--model.adapter.ranks", "[]"], "adapter.ranks: the list of expert ranks is empty"),
    (["--model.adapter.target_modules", "[q_proj, nonexistent_proj]"], "'nonexistent_proj' matches no linear layer"),
    (["--data.train_tasks", "[cooking]"], "data.train_tasks: ['cooking']"),
])
def test_broken_config_fails_at_start_naming_the_key(cli_demo_dir, tmp_path, capsys, extra, message):
    with pytest.raises((SystemExit, ValueError)) as error:
        main(["fit", *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), *extra])
    text = str(error.value) + capsys.readouterr().err
    assert message in text


def test_unknown_key_in_yaml_is_named(cli_demo_dir, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"model": {"adapter": {"rnaks": [2, 4]}}}))
    with pytest.raises(SystemExit):
        main(["fit", *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--config", str(config)])
    assert "rnaks" in capsys.readouterr().err
