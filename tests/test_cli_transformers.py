"""The command line on model.base: transformers (a tiny Qwen2-VL directory): fit, evaluation of all four tasks with
their metrics, the router-sparsity callback's files, the adapter written at the end of fit, test and predict with
it, and MoCLE's cluster routing placing new questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from rode_lightning.cli import main
from tests.conftest import tiny_cli_args
from tests.tiny_vlm import IM_END, save_tiny_qwen2vl


@pytest.fixture(scope="module")
def qwen_base(tmp_path_factory) -> list[str]:
    directory = save_tiny_qwen2vl(tmp_path_factory.mktemp("qwen2vl"))
    return ["--model.base", "transformers", "--model.transformers.path", str(directory),
            "--model.transformers.dtype", "fp32", "--model.transformers.end_of_turn", IM_END]


def test_fit_evaluates_every_task_and_its_adapter_tests_and_predicts(cli_demo_dir, qwen_base, tmp_path):
    logs = tmp_path / "logs"
    main(["fit", *tiny_cli_args(cli_demo_dir, logs, *qwen_base, "--trainer.limit_train_batches", "2",
                                "--trainer.max_epochs", "1",
                                "--trainer.callbacks.every_n_steps", "1")])
    run = logs / "demo" / "version_0"
    saved = json.loads((run / "results" / "val_results.json").read_text())
    assert {"ingredient_iou", "recipe_sacrebleu", "recipe_rouge_l", "pmae_average", "category_accuracy"} <= set(
        saved["results"]["unifood"])
    assert {"ingredient_iou", "pmae_average"} <= set(saved["results"]["nutrition5k"])
    router = json.loads((run / "results" / "router_val.json").read_text())
    assert router and (run / "results" / "router_val.png").is_file()
    record = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert record["base"]["architecture"] == "Qwen2VLForConditionalGeneration"

    main(["test", *tiny_cli_args(cli_demo_dir, logs, *qwen_base), "--model.adapter_path", str(run / "adapter"),
          "--trainer.limit_test_batches", "2"])
    tested = json.loads((run / "test" / "results" / "test_results.json").read_text())
    assert tested["evaluated"] == f"test split, adapter {run / 'adapter'}"

    images = tmp_path / "photos"
    images.mkdir()
    Image.new("RGB", (40, 40), (200, 100, 50)).save(images / "plate.png")
    Image.new("RGB", (64, 32), (20, 100, 150)).save(images / "bowl.png")
    main(["predict", *tiny_cli_args(cli_demo_dir, logs, *qwen_base), "--model.adapter_path", str(run / "adapter"),
          "--data.predict.source", str(images), "--data.predict.tasks", "[ingredients, nutrition]"])
    answers = [json.loads(line) for line in (run / "predict" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(answer["id"] for answer in answers) == ["bowl.png#ingredients", "bowl.png#nutrition",
                                                          "plate.png#ingredients", "plate.png#nutrition"]
    assert all(isinstance(answer["answer"], str) for answer in answers)


def test_cluster_routing_places_new_questions(cli_demo_dir, qwen_base, tmp_path):
    Image.new("RGB", (48, 48), (10, 10, 200)).save(tmp_path / "dish.png")
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"id": "free", "image": "dish.png", "question": "What is on this plate?"}) + "\n")
    output = tmp_path / "answers.jsonl"
    cli = main(["predict", *tiny_cli_args(cli_demo_dir, tmp_path / "logs", *qwen_base), "--model.adapter.method",
                "cluster", "--model.adapter.num_clusters", "4", "--model.adapter.ranks", "[4, 4]",
                "--data.predict.source", str(requests), "--predictions.output_path", str(output)])
    [answer] = [json.loads(line) for line in output.read_text().splitlines()]
    assert answer["id"] == "free" and isinstance(answer["answer"], str)
    assert cli.datamodule.predict_dataset.cluster_ids[0] in range(4)
