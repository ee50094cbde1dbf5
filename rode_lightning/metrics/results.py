"""The results table of a validation or test run, written next to the logs as markdown (to read) and JSON (to
compare runs with scripts), with a sample of predictions beside the ground truth.

Columns follow the RoDE paper's Tables 2 and 3 (ingredient IoU, recipe SacreBLEU and ROUGE-L, pMAE of mass, energy,
fat, protein, carbohydrate and their average), then what the paper does not report (per-sample IoU, category
accuracy). A dataset without a task shows an empty cell rather than a zero.
"""

from __future__ import annotations

import json
from pathlib import Path

from rode_lightning.atomic import write_text_atomically
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
    ("conversation_sacrebleu", "conversation SacreBLEU ↑"),
    ("conversation_rouge_l", "conversation ROUGE-L ↑"),
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
                  floors: dict[str, dict[str, float]] | None = None, evaluated: str | None = None,
                  loss: float | None = None) -> Path:
    """Writes ``<stage>_results.md``, ``<stage>_results.json`` and ``<stage>_predictions.jsonl``; returns the
    markdown path. Files are overwritten: during ``fit`` they always hold the latest validation.

    ``floors`` are the label-only scores of the same split (most frequent ingredients, training-mean nutrition),
    shown under the table. ``evaluated`` says what was scored (an adapter, a checkpoint, an epoch of this run) and
    heads the table. The JSON also records the command and the library versions that produced it
    (:mod:`rode_lightning.provenance`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / f"{stage}_results.md"
    heading = evaluated or f"epoch {epoch}, step {step}"
    text = f"# {stage} results: {heading}\n\n{results_table(results)}\n\n{SCALES}\n"
    if floors:
        text += "\nFloors from the labels alone, on the same split:\n\n" + floors_table(floors) + "\n"
    # Complete or absent: an interrupted write leaves the previous evaluation's files (rode_lightning/atomic.py).
    write_text_atomically(markdown, text)
    record = {"stage": stage, "evaluated": heading, "epoch": epoch, "step": step, "loss": loss, "results": results,
              "floors": floors or {}, "provenance": provenance()}
    write_text_atomically(directory / f"{stage}_results.json", json.dumps(record, indent=2, sort_keys=True))
    write_text_atomically(directory / f"{stage}_predictions.jsonl",
                          "".join(json.dumps(example) + "\n" for example in examples))
    return markdown


FLOOR_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ingredient_iou_most_frequent", "IoU of the most frequent ingredients"),
    ("pmae_average_train_mean", "pMAE avg. of the training mean"),
)


def floors_table(floors: dict[str, dict[str, float]]) -> str:
    """Markdown table of the label-only floors, one row per dataset; only the columns some dataset has."""
    columns = [(key, title) for key, title in FLOOR_COLUMNS if any(key in row for row in floors.values())]
    lines = ["| dataset | " + " | ".join(title for _, title in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for dataset, row in sorted(floors.items()):
        cells = ["" if key not in row else f"{row[key]:.4f}" if key.startswith("ingredient") else f"{row[key]:.2f}"
                 for key, _ in columns]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Console table: metric key -> (task, name shown). Order is the order of the rows.
CONSOLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("category_accuracy", "category", "accuracy"),
    ("ingredient_iou", "ingredients", "IoU"),
    ("ingredient_sample_iou", "ingredients", "sample IoU"),
    ("recipe_sacrebleu", "recipe", "SacreBLEU"),
    ("recipe_rouge_l", "recipe", "ROUGE-L"),
    ("pmae_mass", "nutrition", "pMAE mass"),
    ("pmae_energy", "nutrition", "pMAE energy"),
    ("pmae_fat", "nutrition", "pMAE fat"),
    ("pmae_carbohydrate", "nutrition", "pMAE carbohydrate"),
    ("pmae_protein", "nutrition", "pMAE protein"),
    ("pmae_average", "nutrition", "pMAE average"),
    ("nutrition_missing_rate", "nutrition", "fields missing"),
    ("conversation_sacrebleu", "conversation", "SacreBLEU"),
    ("conversation_rouge_l", "conversation", "ROUGE-L"),
)
# The floor printed beside a metric, from the labels alone (data module).
CONSOLE_FLOORS: dict[str, str] = {"ingredient_iou": "ingredient_iou_most_frequent",
                                  "pmae_average": "pmae_average_train_mean"}


def console_table(title: str, results: dict[str, dict[str, float]],
                  floors: dict[str, dict[str, float]] | None = None) -> str:
    """The results for a person at a terminal: one block per dataset, one row per metric grouped by task, values
    rounded as in the markdown table, the label-only floor beside the metric it bounds."""
    floors = floors or {}
    rows = []
    for dataset in sorted(results):
        for key, task, name in CONSOLE_ROWS:
            if key not in results[dataset]:
                continue
            floor_key = CONSOLE_FLOORS.get(key)
            floor = floors.get(dataset, {}).get(floor_key) if floor_key else None
            rows.append((dataset, task, name, _format(key, results[dataset][key]),
                         "" if floor is None else _format(key, floor)))
    header = ("dataset", "task", "metric", "value", "floor")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [title]
    previous = (None, None)
    for row in [header, *rows]:
        # A dataset and task are named on their first row only, so the blocks stand out.
        shown = list(row)
        if row is not header and (row[0], row[1]) == previous:
            shown[1] = ""
        if row is not header and row[0] == previous[0]:
            shown[0] = ""
        previous = (row[0], row[1]) if row is not header else previous
        cells = [shown[0].ljust(widths[0]), shown[1].ljust(widths[1]), shown[2].ljust(widths[2]),
                 shown[3].rjust(widths[3]), shown[4].rjust(widths[4])]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)
