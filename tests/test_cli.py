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
    assert {"train/loss", "val/loss", "val/unifood/ingredient_iou", "val/unifood/ingredient_iou_most_frequent",
            "val/nutrition5k/pmae_average", "val/unifood/recipe_rouge_l",
            "val/nutrition5k/pmae_average_train_mean"} <= set(metrics)
    events = list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file written"
    trainable = {name for name, p in cli.model.named_parameters() if p.requires_grad}
    assert trainable and all(".experts." in n or ".router." in n or n.startswith("model.projector.")
                             for n in trainable)


def test_the_paper_precision_setup_trains(cli_demo_dir, tmp_path):
    """configs/rode.yaml's precision: a bf16 LLaMA and vision tower under bf16 autocast, fp32 adapters. On the CPU
    (autocast exists there too) the adapters train, with fp32 weights, and validation scores the answers."""
    import torch

    cli = main(["fit", *tiny_cli_args(cli_demo_dir, tmp_path / "logs", "--trainer.precision", "bf16-mixed",
                                      "--model.language.dtype", "bf16", "--model.vision.dtype", "bf16",
                                      "--trainer.limit_train_batches", "3", "--trainer.max_epochs", "1",
                                      "--trainer.limit_val_batches", "1")])
    assert cli.trainer.global_step == 3
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
    assert "val/nutrition5k/ingredient_iou" in cli.trainer.callback_metrics  # the first validation batch's dataset
    trainable = {name: p for name, p in cli.model.named_parameters() if p.requires_grad}
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainable.values())
    assert all(p.abs().max() > 0 for name, p in trainable.items() if name.endswith("lora_B"))  # B starts at 0
    assert cli.model.model.language_model.model.embed_tokens.weight.dtype == torch.bfloat16


def test_validate_subcommand_runs(cli_demo_dir, tmp_path):
    cli = main(["validate", *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--model.vision.patch_size", "16"])
    assert "val/unifood/ingredient_iou" in cli.trainer.callback_metrics
    # The data loaders batch in the model's spelling, its image geometry from model.vision: 64 px / 16 px patches ->
    # 16 image tokens per sample.
    assert cli.datamodule.conversation_format is cli.model.conversation_format
    batch = next(iter(cli.datamodule.val_dataloader()))
    assert batch.pixel_values.shape[-2:] == (64, 64)
    assert batch.image_mask.sum(dim=1).tolist() == [16] * len(batch)


def test_print_config_shows_every_section(cli_demo_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["adapter"]["ranks"] == [2, 4, 8, 16]
    assert printed["model"]["tokenizer"] == "demo"
    # The model's alone: the data module has no tokenizer or image keys (old configs' are dropped, with a warning).
    assert not {"num_image_tokens", "tokenizer", "image_size"} & set(printed["data"])
    assert printed["data"]["sources"][0]["demo_sizes"] == {"train": 16, "val": 4, "test": 4}


@pytest.mark.parametrize("extra, message", [
    (["--model.adapter.rank", "[8]"], "rank"),
    (["--model.adapter.ranks", "[]"], "adapter.ranks: the list of expert ranks is empty"),
    (["--model.adapter.target_modules", "[q_proj, nonexistent_proj]"], "'nonexistent_proj' matches no linear layer"),
    (["--data.tasks.train", "[cooking]"], "data.tasks.train: ['cooking']"),
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


def test_test_subcommand_writes_the_results_table_for_every_task_and_dataset(cli_demo_dir, tmp_path):
    import json

    cli = main(["test", *tiny_cli_args(cli_demo_dir, tmp_path / "logs")])
    results_dir = next((tmp_path / "logs").rglob("results"))
    saved = json.loads((results_dir / "test_results.json").read_text())
    assert saved["stage"] == "test"
    assert set(saved["results"]) == {"unifood", "nutrition5k"}
    assert {"ingredient_iou", "recipe_sacrebleu", "recipe_rouge_l", "pmae_average", "category_accuracy"} <= set(
        saved["results"]["unifood"])
    assert {"ingredient_iou", "pmae_mass", "pmae_average"} <= set(saved["results"]["nutrition5k"])
    assert "recipe_sacrebleu" not in saved["results"]["nutrition5k"]
    for dataset, values in saved["results"].items():
        for name, value in values.items():
            assert cli.trainer.callback_metrics[f"test/{dataset}/{name}"].item() == pytest.approx(value)
    table = (results_dir / "test_results.md").read_text()
    assert "| nutrition5k |" in table and "| unifood |" in table and "SacreBLEU" in table
    examples = [json.loads(line) for line in (results_dir / "test_predictions.jsonl").read_text().splitlines()]
    pairs = {(example["dataset"], example["task"]) for example in examples}
    assert pairs == {("unifood", task) for task in ("category", "ingredients", "recipe", "nutrition")} | {
        ("nutrition5k", "ingredients"), ("nutrition5k", "nutrition")}
    assert all(example["reference"] for example in examples)


def test_predict_answers_a_folder_of_images_into_jsonl_with_parsed_fields(cli_demo_dir, tmp_path):
    import json

    from PIL import Image

    images = tmp_path / "my_photos"
    images.mkdir()
    for name, colour in (("plate.png", (200, 30, 30)), ("bowl.jpg", (30, 200, 30))):
        Image.new("RGB", (80, 60), colour).save(images / name)
    (images / "broken.png").write_bytes(b"not an image")
    output = tmp_path / "answers.jsonl"
    with pytest.warns(UserWarning, match=r"skipped 2 request\(s\): 2 x predict: unreadable image .*broken.png"):
        main(["predict", *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--data.predict.source", str(images),
              "--data.predict.tasks", "[ingredients, nutrition]", "--predictions.output_path", str(output)])
    answers = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted((answer["id"], answer["task"]) for answer in answers) == [
        ("bowl.jpg#ingredients", "ingredients"), ("bowl.jpg#nutrition", "nutrition"),
        ("plate.png#ingredients", "ingredients"), ("plate.png#nutrition", "nutrition")]
    for answer in answers:
        assert isinstance(answer["answer"], str)
        if answer["task"] == "ingredients":
            assert isinstance(answer["ingredients"], list)
        else:
            assert set(answer["nutrition"]) == {"mass_g", "energy_kcal", "fat_g", "carbohydrate_g", "protein_g"}


def test_predict_with_cluster_routing_places_new_questions_in_the_training_clusters(cli_demo_dir, tmp_path):
    import json

    from PIL import Image

    Image.new("RGB", (64, 64), (10, 10, 200)).save(tmp_path / "dish.png")
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"id": "free", "image": "dish.png", "question": "What is on this plate?"}) + "\n")
    output = tmp_path / "answers.jsonl"
    cli = main(["predict", *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--model.adapter.method", "cluster",
                "--model.adapter.num_clusters", "4", "--model.adapter.ranks", "[4, 4]",
                "--data.predict.source", str(requests), "--predictions.output_path", str(output)])
    [answer] = [json.loads(line) for line in output.read_text().splitlines()]
    assert answer["id"] == "free" and answer["task"] is None and "ingredients" not in answer
    assert cli.datamodule.predict_dataset.cluster_ids[0] in range(4)


def test_test_and_predict_of_a_trained_adapter_write_into_its_run_and_print_a_readable_table(
        cli_demo_dir, tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    logs = tmp_path / "logs"
    main(["fit", *tiny_cli_args(cli_demo_dir, logs, "--trainer.limit_train_batches", "1", "--trainer.max_epochs", "1",
                                "--trainer.limit_val_batches", "1")])
    run = logs / "demo" / "version_0"
    capsys.readouterr()
    main(["test", *tiny_cli_args(cli_demo_dir, logs), "--model.adapter_path", str(run / "adapter")])
    printed = capsys.readouterr()
    saved = json.loads((run / "test" / "results" / "test_results.json").read_text())
    assert saved["evaluated"] == f"test split, adapter {run / 'adapter'}"
    assert (run / "test" / "results" / "test_results.md").read_text().startswith(
        f"# test results: test split, adapter {run / 'adapter'}\n")
    assert sorted(path.name for path in (logs / "demo").iterdir()) == ["version_0"]  # no version_1
    # The console table: a heading naming what was evaluated, one row per metric, values rounded as in the table.
    lines = printed.out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("test results: test split, adapter")))
    assert lines[start + 1].split() == ["dataset", "task", "metric", "value", "floor"]
    iou = saved["results"]["unifood"]["ingredient_iou"]
    assert any(f"{iou:.4f}" in line for line in lines[start:] if " IoU " in line and "sample" not in line)
    # Neither Lightning's advertising nor its unrounded copy of the table.
    assert "Tip:" not in printed.out + printed.err and "┃" not in printed.out

    images = tmp_path / "photos"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 100, 50)).save(images / "plate.png")
    main(["predict", *tiny_cli_args(cli_demo_dir, logs), "--model.adapter_path", str(run / "adapter"),
          "--data.predict.source", str(images), "--data.predict.tasks", "[ingredients]"])
    answers = [json.loads(line) for line in (run / "predict" / "predictions.jsonl").read_text().splitlines()]
    assert [answer["task"] for answer in answers] == ["ingredients"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["logs", "photos"]


def test_an_adapter_outside_a_run_directory_gets_a_new_version(cli_demo_dir, tmp_path):
    from rode_lightning.cli import trained_run_dir

    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    assert trained_run_dir(str(run / "adapter"), None) is None  # no hparams.yaml beside it: not a run
    (run / "hparams.yaml").write_text("{}")
    assert trained_run_dir(str(run / "adapter"), None) == run
    assert trained_run_dir(None, str(run / "checkpoints" / "last.ckpt")) == run
    assert trained_run_dir(None, None) is None


def test_the_demo_of_every_layout_trains_and_scores_each_dataset_on_its_own_tasks(tmp_path):
    """configs/demo_all_layouts.yaml: a demo copy of every layout read by its reader, mixed into one fit, each
    dataset scored on the tasks its labels serve (Recipe1M+ has no carbohydrate: not scored, not a zero)."""
    import json

    config = str(__import__("pathlib").Path(__file__).parents[1] / "configs" / "demo_all_layouts.yaml")
    # The file's sources, with Uni-Food's demo copy small (its default is 800 dishes, seconds to draw).
    sources = yaml.safe_load(open(config))["data"]["sources"]
    assert sources[0] == {"dataset": "unifood"}
    sources[0]["demo_sizes"] = {"train": 16, "val": 4, "test": 4}
    main(["fit", *tiny_cli_args(tmp_path / "demo", tmp_path / "logs", "--config", config,
                                "--data.sources", json.dumps(sources), "--trainer.limit_train_batches", "2",
                                "--trainer.max_epochs", "1", "--data.eval_batch_size", "16")])
    saved = json.loads((tmp_path / "logs" / "demo" / "version_0" / "results" / "val_results.json").read_text())
    results = saved["results"]
    assert set(results) == {"unifood", "nutrition5k", "recipe1m", "food101", "vireo172", "huggingface"}
    assert set(results["food101"]) == {"category_accuracy"}
    assert set(results["vireo172"]) == {"category_accuracy", "ingredient_iou", "ingredient_sample_iou"}
    assert "pmae_average" in results["recipe1m"] and "pmae_carbohydrate" not in results["recipe1m"]
    assert "pmae_carbohydrate" in results["unifood"] and "recipe_rouge_l" in results["huggingface"]


def test_a_config_with_the_data_keys_the_model_now_owns_still_runs_and_names_them(cli_demo_dir, tmp_path):
    """data.tokenizer / image_size / num_image_tokens, set by configs of earlier versions: parsed, ignored, named."""
    old = tmp_path / "old.yaml"
    old.write_text("data:\n  tokenizer: demo\n  image_size: 64\n  num_image_tokens: 64\n")
    with pytest.warns(FutureWarning, match=r"data.tokenizer, data.image_size, data.num_image_tokens: no longer used"):
        cli = main(["validate", *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--config", str(old),
                    "--trainer.limit_val_batches", "1"])
    assert "val/loss" in cli.trainer.callback_metrics  # it validated
