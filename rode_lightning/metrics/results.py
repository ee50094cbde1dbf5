"""The results table of a validation or test run, written next to the logs as markdown (to read) and JSON (to
compare runs with scripts), with a sample of predictions beside the ground truth.

Columns follow the RoDE paper's Tables 2 and 3 (ingredient IoU, recipe SacreBLEU and ROUGE-L, pMAE of mass, energy,
fat, protein, carbohydrate and their average), then what the paper does not report (per-sample IoU, category
accuracy). A dataset without a task shows an empty cell rather than a zero.
"""

from __future__ import annotations

import json
from pathlib import Path

from rode_lightning.provenance import provenance

COLUMNS: tuple[tuple[str, str], ...] = (
    ("ingredient_iou", "IoU ↑"),
    ("recipe_sacrebleu", "SacreBLEU ↑"),
    ("recipe_rouge_l", "ROUGE-L ↑"),
    ("pmae_mass", "Mass ↓"),
    ("pmae_energy", "Energy ↓"),
    ("pmae_fat", "Fat ↓"),
    ("pmae_protein", "Protein ↓"),
    ("pmae_carbohydrate", "Carb ↓"),
    ("pmae_average", "pMAE avg. ↓"),
    ("ingredient_sample_iou", "sample IoU ↑"),
    ("category_accuracy", "category acc. ↑"),
)

SCALES = ("IoU and accuracy are fractions (0-1); SacreBLEU and ROUGE-L are 0-100; pMAE is 100 * mean |error| / "
          "mean truth, in percent.")


def results_table(results: dict[str, dict[str, float]]) -> str:
    """Markdown table, one row per dataset; only the columns some dataset has."""
    columns = [(key, title) for key, title in COLUMNS if any(key in row for row in results.values())]
    lines = ["| dataset | " + " | ".join(title for _, title in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for dataset, row in sorted(results.items()):
        cells = [_format(key, row[key]) if key in row else "" for key, _ in columns]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format(key: str, value: float) -> str:
    return f"{value:.4f}" if key in ("ingredient_iou", "ingredient_sample_iou", "category_accuracy") else f"{value:.2f}"


def write_results(directory: str | Path, stage: str, results: dict[str, dict[str, float]],
                  examples: list[dict], epoch: int, step: int,
                  floors: dict[str, dict[str, float]] | None = None) -> Path:
    """Writes ``<stage>_results.md``, ``<stage>_results.json`` and ``<stage>_predictions.jsonl``; returns the
    markdown path. Files are overwritten: during ``fit`` they always hold the latest validation.

    ``floors`` are the label-only scores of the same split (most frequent ingredients, training-mean nutrition),
    shown under the table. The JSON also records the command and the library versions that produced it
    (:mod:`rode_lightning.provenance`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / f"{stage}_results.md"
    text = f"# {stage} results (epoch {epoch}, step {step})\n\n{results_table(results)}\n\n{SCALES}\n"
    if floors:
        text += "\nFloors from the labels alone, on the same split:\n\n" + floors_table(floors) + "\n"
    markdown.write_text(text)
    record = {"stage": stage, "epoch": epoch, "step": step, "results": results, "floors": floors or {},
              "provenance": provenance()}
    (directory / f"{stage}_results.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    with open(directory / f"{stage}_predictions.jsonl", "w") as handle:
        for example in examples:
            handle.write(json.dumps(example) + "\n")
    return markdown


FLOOR_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ingredient_iou_most_frequent", "IoU of the most frequent ingredients"),
    ("pmae_average_train_mean", "pMAE avg. of the training mean"),
)


def floors_table(floors: dict[str, dict[str, float]]) -> str:
    lines = ["| dataset | " + " | ".join(title for _, title in FLOOR_COLUMNS) + " |",
             "| --- |" + " --- |" * len(FLOOR_COLUMNS)]
    for dataset, row in sorted(floors.items()):
        cells = ["" if key not in row else f"{row[key]:.4f}" if key.startswith("ingredient") else f"{row[key]:.2f}"
                 for key, _ in FLOOR_COLUMNS]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
