"""The grid's report: per variant the paper's metrics over seeds, paired differences to the reference, cost, and
the router heatmaps (the RoDE paper's Figure 6), as ``report.md``, ``report.json`` and PNG plots.

Every figure in it comes from the runs' ``run.json`` files: re-running ``report`` on the same runs gives the same
report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from rode_lightning.atomic import save_figure_atomically, write_json_atomically, write_text_atomically
from rode_lightning.callbacks.router_heatmaps import router_heatmap_figure, task_routing_figure
from rode_lightning.experiments.grid import Grid
from rode_lightning.experiments.runner import RESULT, finished_date, run_directory
from rode_lightning.experiments.statistics import paired_difference, summarize

# (metric, column title, higher is better): the columns of the RoDE paper's Tables 4-6, then category accuracy.
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("ingredient_iou", "IoU", True),
    ("recipe_sacrebleu", "SacreBLEU", True),
    ("recipe_rouge_l", "ROUGE-L", True),
    ("pmae_mass", "Mass", False),
    ("pmae_energy", "Energy", False),
    ("pmae_fat", "Fat", False),
    ("pmae_protein", "Protein", False),
    ("pmae_carbohydrate", "Carb", False),
    ("pmae_average", "pMAE avg.", False),
    ("category_accuracy", "category acc.", True),
)
PLOTTED = ("ingredient_iou", "recipe_rouge_l", "pmae_average", "category_accuracy")


def collect(grid: Grid) -> list[dict]:
    records = []
    for run in grid.runs:
        path = run_directory(grid, run) / RESULT
        if path.is_file():
            record = json.loads(path.read_text())
            record.setdefault("finished", finished_date(path))  # run.json written before runs kept their date
            records.append(record)
    return records


def _digits(metric: str) -> int:
    return 3 if metric in ("ingredient_iou", "category_accuracy") else 1


def build_report(grid: Grid, records: list[dict]) -> dict:
    variants = [name for name in grid.variants if any(r["variant"] == name for r in records)]
    datasets = sorted({dataset for record in records for dataset in record["results"]})
    by_variant = {name: [r for r in records if r["variant"] == name] for name in variants}
    scores: dict = {}
    differences: dict = {}
    for dataset in datasets:
        for metric, _, higher in METRICS:
            per_variant = {name: {r["seed"]: r["results"][dataset][metric] for r in runs
                                  if metric in r["results"].get(dataset, {})}
                           for name, runs in by_variant.items()}
            if not any(per_variant.values()):
                continue
            reference = per_variant.get(grid.reference, {})
            for name, values in per_variant.items():
                if not values:
                    continue
                scores.setdefault(name, {}).setdefault(dataset, {})[metric] = {
                    **summarize(list(values.values())).as_dict(), "values": values}
                if name != grid.reference and reference:
                    paired = paired_difference(values, reference, higher)
                    if paired is not None:
                        differences.setdefault(name, {}).setdefault(dataset, {})[metric] = paired.as_dict()
    cost = {name: {"trainable_parameters": runs[0]["trainable_parameters"],
                   "fit_minutes": summarize([r["fit_seconds"] / 60 for r in runs]).as_dict(),
                   "peak_memory_gb": max(r["peak_memory_gb"] for r in runs),
                   "seeds": sorted(r["seed"] for r in runs)}
            for name, runs in by_variant.items()}
    router = {name: _mean_router([r["router"] for r in runs if r.get("router")]) for name, runs in by_variant.items()}
    task_routing = {name: _mean_task_routing([r["router"] for r in runs if (r.get("router") or {}).get("kinds")])
                    for name, runs in by_variant.items()}
    return {"grid": str(grid.path), "reference": grid.reference, "seeds": grid.all_seeds, "variants": variants,
            "datasets": datasets, "runs": len(records), "expected_runs": len(grid.runs), "scores": scores,
            "paired_differences": differences, "cost": cost,
            "router": {name: value for name, value in router.items() if value},
            "task_routing": {name: value for name, value in task_routing.items() if value},
            "versions": next((r["provenance"].get("versions") for r in records if r.get("provenance")), {}),
            "dates": sorted({r["finished"] for r in records if r.get("finished")}),
            "resumed": sorted(f"{r['variant']}/seed_{r['seed']}" for r in records if r.get("resumed"))}


def _mean_router(routers: list[dict]) -> dict | None:
    """The seeds' evaluation-split router statistics averaged (each seed weighs the same)."""
    if not routers:
        return None
    first = routers[0]
    result = {"layers": first["layers"], "ranks": first.get("ranks"), "groups": {}}
    for group in first["groups"]:
        tables = [r["groups"][group]["mean_gate"] for r in routers if group in r["groups"]]
        result["groups"][group] = {"mean_gate": [[sum(t[i][j] for t in tables) / len(tables)
                                                  for j in range(len(tables[0][i]))] for i in range(len(tables[0]))],
                                   "sparsity": sum(r["groups"][group]["sparsity"] for r in routers
                                                   if group in r["groups"]) / len(tables)}
    return result


def _mean(values: list) -> float | None:
    values = [value for value in values if value is not None]
    return sum(values) / len(values) if values else None


def _mean_task_routing(routers: list[dict]) -> dict | None:
    """Per kind of token, over seeds: the task divergence and its permutation baseline per layer (means), in how
    many seeds each layer exceeded its baseline, and each task's mean expert shares (``callbacks/task_routing.py``).
    """
    if not routers:
        return None
    kinds = {}
    for kind in routers[0]["kinds"]:
        runs = [r["kinds"][kind] for r in routers if kind in r["kinds"]]
        layers = len(routers[0]["layers"])
        divergences = [run["task_divergence"] for run in runs]
        groups = {}
        for group in runs[0]["groups"]:
            tables = [run["groups"][group]["mean_share"] for run in runs if group in run["groups"]]
            groups[group] = {"mean_share": [[_mean([t[i][j] for t in tables]) for j in range(len(tables[0][i]))]
                                            for i in range(len(tables[0]))],
                             "tokens": sum(run["groups"][group]["tokens"] for run in runs if group in run["groups"])}
        per_layer = lambda key: [_mean([d[key][i] for d in divergences]) for i in range(layers)]  # noqa: E731
        exceeded = [sum(1 for d in divergences if d["exceeds"][i]) for i in range(layers)]
        kinds[kind] = {"groups": groups, "seeds": len(runs), "exceeded_in_seeds": exceeded,
                       "task_divergence": {"divergence": per_layer("divergence"),
                                           "baseline_95": per_layer("baseline_95"),
                                           "baseline_mean": per_layer("baseline_mean"),
                                           "exceeds": [count == len(runs) for count in exceeded],
                                           "draws": divergences[0]["draws"]}}
    return {"layers": routers[0]["layers"], "ranks": routers[0].get("ranks"), "kinds": kinds}


def _excluding_zero(report: dict, dataset: str, metrics) -> str:
    """The paired differences whose 95 % interval excludes zero, each said as better or worse than the reference."""
    found = []
    for variant in report["variants"]:
        row = report["paired_differences"].get(variant, {}).get(dataset, {})
        for metric, title, higher in metrics:
            paired = row.get(metric)
            if not paired or paired["n"] < 2 or paired["low"] <= 0 <= paired["high"]:
                continue
            better = (paired["mean"] > 0) == higher
            found.append(f"{variant} {title} {'better' if better else 'worse'} ({_difference_cell(paired, metric)})")
    if not found:
        return "No paired interval excludes zero."
    return "Intervals that exclude zero: " + "; ".join(found) + "."


def _dates(report: dict) -> str:
    dates = report.get("dates") or []
    if not dates:
        return ""
    return f"; scored on {dates[0]}" if len(dates) == 1 else f"; scored from {dates[0]} to {dates[-1]}"


def _cell(summary: dict, metric: str) -> str:
    digits = _digits(metric)
    if summary["n"] == 1:
        return f"{summary['mean']:.{digits}f}"
    return (f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f} "
            f"[{summary['low']:.{digits}f}, {summary['high']:.{digits}f}]")


def _difference_cell(paired: dict, metric: str) -> str:
    digits = _digits(metric)
    interval = "" if paired["n"] == 1 else f" [{paired['low']:+.{digits}f}, {paired['high']:+.{digits}f}]"
    return f"{paired['mean']:+.{digits}f}{interval}, better on {paired['better']}/{paired['n']}"


def markdown(report: dict) -> str:
    lines = [f"# Grid report: {report['grid']}", "",
             f"{report['runs']} of {report['expected_runs']} runs; seeds {report['seeds']} (each variant's in the Cost "
             f"table){_dates(report)}. Scores on the test split "
             "as mean ± standard deviation [95 % confidence interval of the mean, Student's t] over seeds. "
             "↑ higher is better, ↓ lower is better.", ""]
    for dataset in report["datasets"]:
        metrics = [(m, t, h) for m, t, h in METRICS
                   if any(m in report["scores"].get(v, {}).get(dataset, {}) for v in report["variants"])]
        lines += [f"## {dataset}", "", "| variant | " + " | ".join(f"{t} {'↑' if h else '↓'}" for _, t, h in metrics)
                  + " |", "| --- |" + " --- |" * len(metrics)]
        for variant in report["variants"]:
            row = report["scores"].get(variant, {}).get(dataset, {})
            lines.append(f"| {variant} | " + " | ".join(_cell(row[m], m) if m in row else "" for m, _, _ in metrics)
                         + " |")
        lines += ["", f"Paired differences to {report['reference']} (variant - reference on the same seed, 95 % "
                  "interval, seeds on which the variant is better):", "",
                  "| variant | " + " | ".join(t for _, t, _ in metrics) + " |", "| --- |" + " --- |" * len(metrics)]
        for variant in report["variants"]:
            row = report["paired_differences"].get(variant, {}).get(dataset, {})
            if row:
                lines.append(f"| {variant} | " + " | ".join(_difference_cell(row[m], m) if m in row else ""
                                                             for m, _, _ in metrics) + " |")
        lines += ["", _excluding_zero(report, dataset, metrics), ""]
    lines += ["## Cost", "", "| variant | seeds | trainable parameters | fit minutes (mean) | peak memory GB |",
              "| --- | --- | --- | --- | --- |"]
    for variant in report["variants"]:
        cost = report["cost"][variant]
        lines.append(f"| {variant} | {', '.join(map(str, cost['seeds']))} | {cost['trainable_parameters']:,} | "
                     f"{cost['fit_minutes']['mean']:.1f} | {cost['peak_memory_gb']:.2f} |")
    if report.get("resumed"):
        lines += ["", f"Fits resumed from a checkpoint after an interruption: {', '.join(report['resumed'])}."]
    if report["router"]:
        lines += ["", "## Router sparsity on the test split", "",
                  "Fraction of zero gates over every adapted layer and real token, per task and per dataset (mean over seeds); the "
                  "heatmaps are `router_<variant>.png`.", "",
                  "| variant | " + " | ".join(next(iter(report["router"].values()))["groups"]) + " |",
                  "| --- |" + " --- |" * len(next(iter(report["router"].values()))["groups"])]
        for variant, router in report["router"].items():
            lines.append(f"| {variant} | " + " | ".join(f"{group['sparsity']:.3f}"
                                                         for group in router["groups"].values()) + " |")
    lines += _task_routing_lines(report.get("task_routing", {}))
    return "\n".join(lines) + "\n"


def _task_routing_lines(task_routing: dict) -> list[str]:
    if not task_routing:
        return []
    lines = ["", "## Task routing on the test split", "",
             "How differently the tasks use the experts, per adapted layer: the Jensen-Shannon divergence (bits) "
             "between the tasks' mean expert shares (each token's gates divided by their sum), beside a permutation "
             "baseline (task labels shuffled across samples; its 95th percentile). *Above baseline*: layers whose "
             "divergence exceeded the baseline in every seed (in at least one seed). Means over seeds; the figures "
             "are `router_<variant>_tasks.png`.", "",
             "| variant | tokens | above baseline: every seed (any) | divergence, mean over layers | baseline 95th "
             "percentile, mean |", "| --- | --- | --- | --- | --- |"]
    for variant, routing in task_routing.items():
        layers = len(routing["layers"])
        for kind, values in routing["kinds"].items():
            divergence = values["task_divergence"]
            every = sum(divergence["exceeds"])
            any_seed = sum(1 for count in values["exceeded_in_seeds"] if count)
            mean, high = _mean(divergence["divergence"]), _mean(divergence["baseline_95"])
            lines.append(f"| {variant} | {kind} | {every}/{layers} ({any_seed}/{layers}) | "
                         f"{'' if mean is None else f'{mean:.4f}'} | {'' if high is None else f'{high:.4f}'} |")
    return lines


def plot_metrics(report: dict, path: Path) -> Path | None:
    """Per (dataset, metric): each variant's mean with its 95 % interval, and each seed as a dot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(d, m) for d in report["datasets"] for m in PLOTTED
              if any(m in report["scores"].get(v, {}).get(d, {}) for v in report["variants"])]
    if not panels:
        return None
    variants = report["variants"]
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(3.6 * columns, 0.5 + 0.32 * len(variants) * rows + 0.9 * rows), dpi=110)
    FigureCanvasAgg(figure)
    titles = {m: (t, h) for m, t, h in METRICS}
    for index, (dataset, metric) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        for row, variant in enumerate(variants):
            summary = report["scores"].get(variant, {}).get(dataset, {}).get(metric)
            if summary is None:
                continue
            error = None if summary["n"] == 1 else [[summary["mean"] - summary["low"]],
                                                    [summary["high"] - summary["mean"]]]
            colour = "tab:red" if variant == report["reference"] else "tab:blue"
            axes.errorbar([summary["mean"]], [row], xerr=error, fmt="o", color=colour, capsize=3)
            axes.scatter(list(summary["values"].values()), [row] * len(summary["values"]), s=8, color=colour,
                         alpha=0.35)
        axes.set_yticks(range(len(variants)), variants if index % columns == 0 else [""] * len(variants),
                        fontsize=7)
        axes.invert_yaxis()
        title, higher = titles[metric]
        axes.set_title(f"{dataset}: {title} {'↑' if higher else '↓'}", fontsize=9)
        axes.tick_params(axis="x", labelsize=7)
        axes.grid(axis="x", alpha=0.3)
    figure.suptitle("test split: mean and 95 % interval over seeds (dots: seeds)", fontsize=9)
    figure.tight_layout()
    save_figure_atomically(figure, path)
    return path


def plot_router(variant: str, router: dict, path: Path) -> Path:
    """Figure 6: layers x experts mean gate per task and dataset, one colour scale shared by every panel."""
    figure = router_heatmap_figure(router, f"{variant}: mean gate on the test split (mean over seeds)")
    save_figure_atomically(figure, path, bbox_inches="tight")
    return path


def write_report(grid: Grid, directory: Path | None = None) -> Path:
    directory = directory or grid.output / "report"
    directory.mkdir(parents=True, exist_ok=True)
    report = build_report(grid, collect(grid))
    # Each file complete or absent (rode_lightning/atomic.py): a report cut short keeps the previous one's files.
    write_json_atomically(directory / "report.json", report, indent=2, sort_keys=True)
    write_text_atomically(directory / "report.md", markdown(report))
    plot_metrics(report, directory / "metrics.png")
    for variant, router in report["router"].items():
        plot_router(variant, router, directory / f"router_{variant}.png")
    for variant, routing in report.get("task_routing", {}).items():
        figure = task_routing_figure(routing, f"{variant}: task routing on the test split (mean over seeds; orange: "
                                              "above the baseline in every seed)")
        save_figure_atomically(figure, directory / f"router_{variant}_tasks.png", bbox_inches="tight")
    return directory / "report.md"
