from __future__ import annotations

import json

import torch

from rode_lightning.metrics.results import console_table, floors_table, results_table, write_results


def test_table_has_the_paper_columns_in_order_and_blank_cells_for_missing_tasks():
    table = results_table({
        "unifood": {"ingredient_iou": 0.5, "recipe_sacrebleu": 12.345, "recipe_rouge_l": 40.0, "pmae_mass": 20.0,
                    "pmae_energy": 21.0, "pmae_fat": 30.0, "pmae_protein": 25.0, "pmae_carbohydrate": 22.0,
                    "pmae_average": 23.6, "category_accuracy": 0.75},
        "nutrition5k": {"ingredient_iou": 0.25, "pmae_mass": 10.0, "pmae_average": 11.0},
    })
    header, rule, *rows = table.splitlines()
    titles = [cell.strip() for cell in header.strip("|").split("|")]
    assert titles == ["dataset", "IoU ↑", "SacreBLEU ↑", "ROUGE-L ↑", "Mass ↓", "Energy ↓", "Fat ↓", "Protein ↓",
                      "Carb ↓", "pMAE avg. ↓", "category acc. ↑"]  # no sample-IoU column: no dataset has it
    assert rule.count("---") == len(titles)
    cells = {row.split("|")[1].strip(): [cell.strip() for cell in row.strip("|").split("|")[1:]] for row in rows}
    assert cells["unifood"][:3] == ["0.5000", "12.35", "40.00"]
    assert cells["nutrition5k"][0] == "0.2500" and cells["nutrition5k"][1] == "" and cells["nutrition5k"][3] == "10.00"
    assert list(cells) == ["nutrition5k", "unifood"]


def test_write_results_leaves_markdown_json_and_predictions(tmp_path):
    results = {"unifood": {"ingredient_iou": 0.5}}
    examples = [{"dataset": "unifood", "task": "ingredients", "id": "x", "prediction": "rice", "reference": "rice, egg"}]
    evaluated = "test split, adapter logs/demo/version_0/adapter"
    path = write_results(tmp_path / "results", "test", results, examples, epoch=2, step=40, evaluated=evaluated,
                         loss=1.25)
    assert path == tmp_path / "results" / "test_results.md"
    assert path.read_text().startswith(f"# test results: {evaluated}\n")
    assert "| unifood | 0.5000 |" in path.read_text()
    saved = json.loads((tmp_path / "results" / "test_results.json").read_text())
    provenance = saved.pop("provenance")
    assert saved == {"stage": "test", "evaluated": evaluated, "epoch": 2, "step": 40, "loss": 1.25,
                     "results": results, "floors": {}}
    assert provenance["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert provenance["command"]
    lines = (tmp_path / "results" / "test_predictions.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == examples


def test_floors_are_written_under_the_table_and_into_the_json(tmp_path):
    floors = {"unifood": {"ingredient_iou_most_frequent": 0.18789, "pmae_average_train_mean": 37.284}}
    path = write_results(tmp_path, "val", {"unifood": {"ingredient_iou": 0.5}}, [], epoch=0, step=1, floors=floors)
    assert "| unifood | 0.1879 | 37.28 |" in path.read_text()
    assert json.loads((tmp_path / "val_results.json").read_text())["floors"] == floors


def test_console_table_aligns_rounds_and_names_each_dataset_and_task_once():
    results = {"unifood": {"ingredient_iou": 0.51234, "ingredient_sample_iou": 0.4, "pmae_average": 30.123,
                           "category_accuracy": 0.5},
               "nutrition5k": {"ingredient_iou": 0.3}}
    floors = {"unifood": {"ingredient_iou_most_frequent": 0.143, "pmae_average_train_mean": 29.531}}
    lines = console_table("val results: epoch 0", results, floors).splitlines()
    assert lines == [
        "val results: epoch 0",
        "  dataset      task         metric         value   floor",
        "  nutrition5k  ingredients  IoU           0.3000",
        "  unifood      category     accuracy      0.5000",
        "               ingredients  IoU           0.5123  0.1430",
        "                            sample IoU    0.4000",
        "               nutrition    pMAE average   30.12   29.53",
    ]


def test_floors_table_leaves_out_a_floor_no_dataset_has():
    table = floors_table({"my_food": {"ingredient_iou_most_frequent": 0.21333}})
    assert table.splitlines() == ["| dataset | IoU of the most frequent ingredients |", "| --- | --- |",
                                  "| my_food | 0.2133 |"]
