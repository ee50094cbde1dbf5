"""The demo's figures in README.md: measured by the README's own commands, kept as JSON, rendered by this script.

    python scripts/demo_results.py run      # build the base if needed, fit, test, test the bare base; then render
    python scripts/demo_results.py render   # README.md's result tables from results/demo/*.json
    python scripts/demo_results.py check    # exit 1 if README.md's tables differ from what render would write
    python scripts/demo_results.py grid     # copy the grids' reports (logs/grids/*/report) to results/grid*; render
    python scripts/demo_results.py transformers   # fit and test the demo through model.base: transformers; render

``run`` executes, in a fresh log directory each, exactly the commands README.md shows:

    python -m rode_lightning fit --config configs/demo.yaml
    python -m rode_lightning test --config configs/demo.yaml --model.adapter_path <fit's adapter>
    python -m rode_lightning test --config configs/demo.yaml            (the frozen base, adapters at zero)

(``transformers`` runs the first two with ``--config configs/demo_transformers.yaml`` added) and copies each run's
results JSON (which records the command and the library versions) with its wall-clock time
and peak memory into ``results/demo/``. The tables in README.md between ``<!-- demo-results:NAME -->`` and
``<!-- /demo-results -->`` are never typed: ``tests/test_readme_results.py`` fails when they differ from the JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import readme_blocks  # noqa: E402
from rode_lightning.metrics.results import floors_table, results_table  # noqa: E402

RESULTS = REPO / "results" / "demo"
LOGS = "logs"
RUNS = {
    # name: (subcommand, extra arguments, results file written by the run)
    "fit": ("fit", [], "val_results.json"),
    "test": ("test", ["--model.adapter_path", "{adapter}"], "test_results.json"),
    "base": ("test", [], "test_results.json"),
}
TRANSFORMERS = ["--config", "configs/demo_transformers.yaml"]
TRANSFORMERS_LOGS = "demo_transformers"  # the overlay's logger name


def _run(name: str, adapter: str | None, overlay: list[str] = (), prefix: str = "", logger_name: str = "demo"
         ) -> dict:
    subcommand, extra, produced = RUNS[name]
    version = f"reference-{prefix}{name}"
    log_dir = REPO / LOGS / logger_name / version
    shutil.rmtree(log_dir, ignore_errors=True)
    command = [sys.executable, "-m", "rode_lightning", subcommand, "--config", "configs/demo.yaml", *overlay,
               *[argument.format(adapter=adapter) for argument in extra],
               "--trainer.logger.init_args.version", version]
    print("$", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    seconds = time.perf_counter() - start
    record = json.loads((log_dir / "results" / produced).read_text())
    # The largest resident set of any child so far: runs are sequential and the fit is the largest.
    record["peak_memory_gb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
    record["seconds"] = seconds
    record["log_dir"] = str(log_dir.relative_to(REPO))
    return record


def _base_record() -> Path:
    from rode_lightning.data.datamodule import default_demo_dir
    from rode_lightning.pretrain.build import DemoBase

    return DemoBase(default_demo_dir() / "base").record


def run() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    base_was_built = _base_record().is_file()
    fit = _run("fit", None)
    build = json.loads(_base_record().read_text())
    fit["base_build"] = {"built_by_this_fit": not base_was_built, "seconds": build["seconds"],
                         "final_losses": build["final_losses"]}
    (RESULTS / "fit.json").write_text(json.dumps(fit, indent=2, sort_keys=True) + "\n")
    adapter = REPO / fit["log_dir"] / "adapter"
    for name in ("test", "base"):
        record = _run(name, str(adapter.relative_to(REPO)))
        (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    render()


def run_transformers() -> None:
    """The demo's fit and test through ``model.base: transformers`` (configs/demo_transformers.yaml)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    fit = _run("fit", None, TRANSFORMERS, "transformers-", TRANSFORMERS_LOGS)
    (RESULTS / "transformers_fit.json").write_text(json.dumps(fit, indent=2, sort_keys=True) + "\n")
    adapter = REPO / fit["log_dir"] / "adapter"
    test = _run("test", str(adapter.relative_to(REPO)), TRANSFORMERS, "transformers-", TRANSFORMERS_LOGS)
    (RESULTS / "transformers_test.json").write_text(json.dumps(test, indent=2, sort_keys=True) + "\n")
    render()


def transformers_block() -> str:
    fit, test = _load("transformers_fit"), _load("transformers_test")
    return (f"`{fit['provenance']['command']}` (epoch {fit['epoch']}, step {fit['step']}; "
            f"{fit['seconds'] / 60:.1f} min wall clock; peak memory {fit['peak_memory_gb']:.2f} GB), then "
            f"`{test['provenance']['command']}`:\n\n{targets_table({'val': fit, 'test': test})}\n\n"
            f"Test split:\n\n{results_table(test['results'])}")


def _load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


GRID_RESULTS = REPO / "results" / "grid"
GRID_TRANSFORMERS_RESULTS = REPO / "results" / "grid_transformers"
GRID_REPORTS = {GRID_RESULTS: REPO / "logs" / "grids" / "demo" / "report",
                GRID_TRANSFORMERS_RESULTS: REPO / "logs" / "grids" / "demo_transformers" / "report"}
VERSIONS_SHOWN = ("python", "torch", "lightning", "transformers", "open_clip_torch", "peft", "tokenizers", "pillow")


def copy_grid_report() -> None:
    """Both grids' reports (the demo grid's and the transformers path's, where run) into ``results/``."""
    for results, report in GRID_REPORTS.items():
        if not (report / "report.json").is_file():
            continue
        results.mkdir(parents=True, exist_ok=True)
        for file in sorted(report.glob("*")):
            if file.suffix in (".json", ".md", ".png"):
                shutil.copy2(file, results / file.name)
    render()


def _measured(report: dict) -> str:
    versions = report.get("versions") or {}
    shown = ", ".join(f"{name} {versions[name]}" for name in VERSIONS_SHOWN if name in versions)
    dates = report.get("dates") or []
    when = (f"on {dates[0]}" if len(dates) == 1 else f"from {dates[0]} to {dates[-1]}") if dates else ""
    return f"Scored {when} with {shown}." if shown else ""


def grid_block() -> str:
    """The grid report's tables (``report.md`` without its title), its plots, the command, dates and versions."""
    report = json.loads((GRID_RESULTS / "report.json").read_text())
    text = (GRID_RESULTS / "report.md").read_text().split("\n", 2)[2].strip()
    text = re.sub(r"^## ", "#### ", text, flags=re.MULTILINE)  # the report's sections, under README's headings
    reference = report["reference"]
    plots = ["![metrics per variant](results/grid/metrics.png)"] + [
        f"![router of {variant}](results/grid/router_{variant}.png)" for variant in report["router"]
        if variant == reference] + [
        f"![task routing of {variant}](results/grid/router_{variant}_tasks.png)"
        for variant in report.get("task_routing", {}) if variant == reference]
    return (f"`python -m rode_lightning.experiments run {report['grid']}`: {report['runs']} of "
            f"{report['expected_runs']} runs. {_measured(report)}\n\n{text}\n\n" + "\n\n".join(plots))


PATH_METRICS = (("unifood", "ingredient_iou", "Uni-Food IoU", True), ("unifood", "recipe_rouge_l", "ROUGE-L", True),
                ("unifood", "pmae_average", "Uni-Food pMAE avg.", False),
                ("unifood", "category_accuracy", "category acc.", True),
                ("nutrition5k", "ingredient_iou", "Nutrition5k IoU", True),
                ("nutrition5k", "pmae_average", "Nutrition5k pMAE avg.", False))


def transformers_grid_block() -> str:
    """The transformers path's runs beside the LLaVA path's runs of the same variants and seeds: per metric both
    means with their seeds' standard deviation, and the paired difference (transformers - LLaVA, same seed) with its
    95 % interval; the paths agree within the seeds' spread where that interval contains zero."""
    from rode_lightning.experiments.statistics import paired_difference

    other = json.loads((GRID_TRANSFORMERS_RESULTS / "report.json").read_text())
    llava = json.loads((GRID_RESULTS / "report.json").read_text())
    lines = [f"`python -m rode_lightning.experiments run {other['grid']}`: {other['runs']} of {other['expected_runs']} "
             f"runs. {_measured(other)} Beside the same variants and seeds of `{llava['grid']}`:", "",
             "| variant | metric | LLaVA-1.5 path | transformers path | transformers - LLaVA, same seed [95 % interval] "
             "| within the seeds' spread |", "| --- | --- | --- | --- | --- | --- |"]
    for variant in other["variants"]:
        for dataset, metric, title, higher in PATH_METRICS:
            ours = other["scores"].get(variant, {}).get(dataset, {}).get(metric)
            theirs = llava["scores"].get(variant, {}).get(dataset, {}).get(metric)
            if not ours or not theirs:
                continue
            digits = 3 if metric in ("ingredient_iou", "category_accuracy") else 1
            paired = paired_difference({int(k): v for k, v in ours["values"].items()},
                                       {int(k): v for k, v in theirs["values"].items()}, higher)
            if paired is None:
                continue
            summary = paired.summary
            interval = "" if summary.n < 2 else f" [{summary.low:+.{digits}f}, {summary.high:+.{digits}f}]"
            agree = "yes" if summary.n < 2 or summary.low <= 0 <= summary.high else "no"
            lines.append(f"| {variant} | {title} | {theirs['mean']:.{digits}f} ± {theirs['std']:.{digits}f} | "
                         f"{ours['mean']:.{digits}f} ± {ours['std']:.{digits}f} | {summary.mean:+.{digits}f}{interval} "
                         f"(n={summary.n}) | {agree} |")
    return "\n".join(lines)


def blocks() -> dict[str, str]:
    """The generated README blocks, by name."""
    fit, test, base = _load("fit"), _load("test"), _load("base")
    versions = fit["provenance"]["versions"]
    shown = ", ".join(f"{name} {versions[name]}" for name in ("python", "torch", "lightning", "transformers",
                                                              "open_clip_torch", "peft", "tokenizers"))

    build = fit["base_build"]
    base_time = (f"of which {build['seconds']['total'] / 60:.1f} min building the base" if build["built_by_this_fit"]
                 else "the base already built")
    return {
        "validation": f"`{fit['provenance']['command']}` (epoch {fit['epoch']}, step {fit['step']}; "
                      f"{fit['seconds'] / 60:.1f} min wall clock, {base_time}; peak memory "
                      f"{fit['peak_memory_gb']:.2f} GB):\n\n"
                      f"{results_table(fit['results'])}\n\nFloors on the validation split:\n\n{floors_table(fit['floors'])}",
        "test": f"`{test['provenance']['command']}` ({test['seconds']:.0f} s):\n\n{results_table(test['results'])}"
                f"\n\nThe frozen base without adapters (`{base['provenance']['command']}`):\n\n"
                f"{results_table(base['results'])}\n\nFloors on the test split:\n\n{floors_table(test['floors'])}",
        "targets": targets_table({"val": fit, "test": test}),
        **({"grid": grid_block()} if (GRID_RESULTS / "report.json").is_file() else {}),
        **({"grid_transformers": transformers_grid_block()}
           if (GRID_TRANSFORMERS_RESULTS / "report.json").is_file() else {}),
        **({"transformers": transformers_block()} if (RESULTS / "transformers_test.json").is_file() else {}),
        "versions": f"Measured with {shown} ({fit['provenance']['platform']}); `constraints.txt` pins the whole set.",
    }


def targets_table(records: dict[str, dict]) -> str:
    lines = ["| split | dataset | IoU / floor (>= 2) | pMAE avg. / floor (<= 0.75) | category acc. (>= 0.8) |",
             "| --- | --- | --- | --- | --- |"]
    for split, record in records.items():
        for dataset, row in sorted(record["results"].items()):
            floors = record["floors"].get(dataset, {})
            cells = []
            for key, floor, target, better in (("ingredient_iou", "ingredient_iou_most_frequent", 2.0, max),
                                               ("pmae_average", "pmae_average_train_mean", 0.75, min)):
                if key in row and floor in floors:
                    ratio = row[key] / floors[floor]
                    met = ratio >= target if better is max else ratio <= target
                    cells.append(f"{ratio:.2f} ({'met' if met else 'NOT met'})")
                else:
                    cells.append("")
            if "category_accuracy" in row:
                accuracy = row["category_accuracy"]
                cells.append(f"{accuracy:.4f} ({'met' if accuracy >= 0.8 else 'NOT met'})")
            else:
                cells.append("")
            lines.append(f"| {split} | {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rendered(text: str) -> str:
    return readme_blocks.rendered(text, "demo-results", blocks())


def render() -> None:
    readme_blocks.render("demo-results", blocks)


def check() -> int:
    return readme_blocks.check("demo-results", blocks, "python scripts/demo_results.py render")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "render", "check", "grid", "transformers"])
    action = parser.parse_args().action
    if action == "run":
        run()
    elif action == "transformers":
        run_transformers()
    elif action == "render":
        render()
    elif action == "grid":
        copy_grid_report()
    else:
        return check()
    return 0


if __name__ == "__main__":
    sys.exit(main())
