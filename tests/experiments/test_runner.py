"""A grid end to end at tiny size: 2 variants x 2 seeds, the report, and a run killed mid-fit that resumes to the
uninterrupted run's result."""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

import pytest
import yaml

from rode_lightning.experiments.__main__ import main as experiments_main
from rode_lightning.experiments.grid import Grid, GridError
from rode_lightning.experiments import runner
from rode_lightning.experiments.runner import fit_command, print_commands, run_directory, run_grid
from tests.cli_process import run_cli_process
from tests.conftest import tiny_cli_args

REPO = Path(__file__).resolve().parents[2]


def _grid_file(tmp_path: Path, cli_demo_dir: Path, name: str, variants: dict, seeds: list[int],
               extra: list[str] = ()) -> Path:
    # tiny_cli_args minus its --config and logger directory, which the runner sets itself.
    arguments = tiny_cli_args(cli_demo_dir, tmp_path / "unused")[2:]
    index = arguments.index("--trainer.logger.init_args.save_dir")
    del arguments[index:index + 2]
    arguments += ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3",
                  "--trainer.limit_val_batches", "0", *extra]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base": [str(REPO / "configs" / "demo.yaml")], "arguments": arguments,
                                    "variants": variants, "seeds": seeds, "reference": next(iter(variants)),
                                    "output": str(tmp_path / name), "checkpoint_every_n_steps": 2},
                                   sort_keys=False))
    return path


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Every run of this module on one thread: the killed run's result is compared with the uninterrupted run's to
    the last bit, and with two threads a run under load once differed in the 6th digit of its gates."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setenv("MKL_NUM_THREADS", "1")
        yield


VARIANTS = {"rode": [str(REPO / "configs" / "variants" / "rode_2_4_8_16.yaml")],
            "lora_r8": [str(REPO / "configs" / "variants" / "lora_r8.yaml")]}


def forked_execute(command: list[str], log: Path, threads: int | None) -> tuple[float, float]:
    """The runner's ``_execute`` with each ``python -m rode_lightning`` command run as a fork of a process that has
    imported the CLI already (tests/cli_process.py), not a new interpreter: the same command, output log, exit
    status and memory reading. The killed-run test below kills a fit run by the runner's own ``_execute``."""
    assert command[:3] == ["python", "-m", "rode_lightning"]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    start = time.perf_counter()
    with open(log, "a") as handle:
        handle.write(f"$ {shlex.join(command)}\n")
    result = run_cli_process(command[3:], Path.cwd(), env, timeout=600, output=log)
    if result.returncode != 0:
        raise RuntimeError(f"`{shlex.join(command)}` exited with {result.returncode}; see {log}")
    return time.perf_counter() - start, result.peak_memory_kb / 1024 ** 2


@pytest.fixture(scope="module")
def finished_grid(tmp_path_factory, cli_demo_dir):
    tmp_path = tmp_path_factory.mktemp("grid")
    grid = Grid.from_file(_grid_file(tmp_path, cli_demo_dir, "whole", VARIANTS, [0, 1]))
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "_execute", forked_execute)
        records = run_grid(grid, announce=lines.append)
    return grid, records, lines


def test_a_grid_runs_every_variant_and_seed_and_reports_them(finished_grid):
    grid, records, lines = finished_grid
    assert sorted((r["variant"], r["seed"]) for r in records) == [("lora_r8", 0), ("lora_r8", 1), ("rode", 0),
                                                                  ("rode", 1)]
    assert any(line.startswith("[4/4]") and "left" in line for line in lines)
    rode = next(r for r in records if r["variant"] == "rode")
    assert rode["trainable_parameters"] > 0 and rode["fit_seconds"] > 0 and rode["peak_memory_gb"] > 0
    assert set(rode["results"]) == {"unifood", "nutrition5k"}
    assert rode["router"] and "recipe" in rode["router"]["groups"]  # the test split's Figure 6 statistics
    kinds = rode["router"]["kinds"]  # and over answer, image and generated tokens alone, with the baseline
    assert set(kinds) == {"answer", "image", "generated", "all"}
    for kind in kinds.values():
        assert {"recipe", "nutrition", "unifood"} <= set(kind["groups"])
        divergence = kind["task_divergence"]
        assert divergence["draws"] == 200 and len(divergence["divergence"]) == len(rode["router"]["layers"])
    assert (kinds["answer"]["groups"]["recipe"]["tokens"] < kinds["all"]["groups"]["recipe"]["tokens"])
    test_results = runner.test_directory(grid, grid.runs[0]) / "results"
    assert (test_results / "router_test_tasks.png").stat().st_size > 0
    lora = next(r for r in records if r["variant"] == "lora_r8")
    assert lora["router"] is None and lora["trainable_parameters"] != rode["trainable_parameters"]

    assert experiments_main(["report", str(grid.path)]) == 0
    report = json.loads((grid.output / "report" / "report.json").read_text())
    iou = report["scores"]["lora_r8"]["unifood"]["ingredient_iou"]
    values = [r["results"]["unifood"]["ingredient_iou"] for r in records if r["variant"] == "lora_r8"]
    assert iou["mean"] == pytest.approx(sum(values) / 2)
    paired = report["paired_differences"]["lora_r8"]["unifood"]["ingredient_iou"]
    by_seed = {(r["variant"], r["seed"]): r["results"]["unifood"]["ingredient_iou"] for r in records}
    assert paired["mean"] == pytest.approx(sum(by_seed[("lora_r8", s)] - by_seed[("rode", s)] for s in (0, 1)) / 2)
    text = (grid.output / "report" / "report.md").read_text()
    assert "## unifood" in text and "Paired differences to rode" in text and "## Cost" in text
    assert (grid.output / "report" / "metrics.png").stat().st_size > 0
    assert (grid.output / "report" / "router_rode.png").stat().st_size > 0
    assert "## Task routing on the test split" in text and "| rode | answer |" in text
    assert (grid.output / "report" / "router_rode_tasks.png").stat().st_size > 0
    routing = report["task_routing"]["rode"]["kinds"]["answer"]
    divergences = [r["router"]["kinds"]["answer"]["task_divergence"]["divergence"] for r in records
                   if r["variant"] == "rode"]
    assert routing["task_divergence"]["divergence"][0] == pytest.approx(sum(d[0] for d in divergences) / 2)

    before = {r["variant"]: r for r in records}
    again = run_grid(grid, announce=lines.append)  # everything done: skipped
    assert lines[-1].startswith("4 of 4 runs already done") and len(again) == 4
    assert {r["variant"]: r for r in again}.keys() == before.keys()


def test_a_killed_run_resumes_from_its_checkpoint_to_the_uninterrupted_result(finished_grid, tmp_path, cli_demo_dir):
    """The same seed gives the same result, also when the fit was killed at step 4 and resumed from last.ckpt."""
    grid, records, _ = finished_grid
    killer = ["--trainer.callbacks+=tests.experiments.killer.KillAtStep", "--trainer.callbacks.step=4",
              f"--trainer.callbacks.once={tmp_path / 'killed_once'}"]
    interrupted = Grid.from_file(_grid_file(tmp_path, cli_demo_dir, "killed", {"rode": VARIANTS["rode"]}, [1],
                                            killer))
    with pytest.raises(RuntimeError, match="exited with -9"):
        run_grid(interrupted, announce=lambda line: None)  # the runner's own _execute: a new interpreter, killed
    run = interrupted.runs[0]
    assert (run_directory(interrupted, run) / "checkpoints" / "last.ckpt").is_file()
    assert not (run_directory(interrupted, run) / "run.json").exists()
    resumed = Grid.from_file(_grid_file(tmp_path, cli_demo_dir, "killed", {"rode": VARIANTS["rode"]}, [1],
                                        killer))  # the same command: the kill is spent
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:  # the resumed fit and the test as forks (two imports fewer)
        patch.setattr(runner, "_execute", forked_execute)
        [record] = run_grid(resumed, announce=lines.append)
    assert any("resuming" in line and "--ckpt_path" in line for line in lines)
    uninterrupted = next(r for r in records if r["variant"] == "rode" and r["seed"] == 1)
    assert record["resumed"] is True and uninterrupted["resumed"] is False
    assert record["results"] == uninterrupted["results"]
    assert record["router"] == uninterrupted["router"]


def test_commands_and_slurm_script(finished_grid):
    grid, _, _ = finished_grid
    commands = print_commands(grid).splitlines()
    assert commands[0] == "# rode/seed_0" and commands[1].startswith("python -m rode_lightning fit --config")
    assert "--seed_everything 0 --data.seed 0" in commands[1] and "--model.adapter_path" in commands[2]
    script = print_commands(grid, slurm=True, grid_argument="grid.yaml")
    assert "#SBATCH --job-name=rode-grid --array=0-3" in script
    assert 'run grid.yaml --index "$SLURM_ARRAY_TASK_ID"' in script


@pytest.mark.parametrize("change, message", [
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"reference": "nope"}, "reference 'nope' is not a variant"),
    ({"variants": {"a b": []}}, "variant name 'a b'"),
    ({"base": ["missing.yaml"]}, "config file missing.yaml not found"),
    ({"colour": 1}, "unknown field"),
    ({"variants": {"rode": {"overlays": [], "seed": [1]}}}, r"variants.rode: unknown field\(s\) \['seed'\]"),
    ({"variants": {"rode": {"overlays": [], "seeds": [1, 1]}}}, "variants.rode.seeds must be a non-empty list"),
])
def test_bad_grid_files_are_named(tmp_path, change, message, capsys):
    raw = {"base": [str(REPO / "configs" / "demo.yaml")], "variants": {"rode": []}, "seeds": [0],
           "output": str(tmp_path / "out"), **change}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(GridError, match=message):
        Grid.from_file(path)
    assert experiments_main(["run", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


def test_a_variant_may_run_seeds_of_its_own(tmp_path):
    raw = {"base": [str(REPO / "configs" / "demo.yaml")], "seeds": [0, 1], "output": str(tmp_path / "out"),
           "variants": {"rode": {"overlays": [], "seeds": [0, 1, 2, 3]}, "lora": [], "top1": {"overlays": []}}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    grid = Grid.from_file(path)
    assert [run.key for run in grid.runs] == ["rode/seed_0", "lora/seed_0", "top1/seed_0", "rode/seed_1",
                                              "lora/seed_1", "top1/seed_1", "rode/seed_2", "rode/seed_3"]
    assert grid.all_seeds == [0, 1, 2, 3] and grid.seeds_of("top1") == [0, 1]



def test_a_grid_file_with_old_data_keys_runs_today_s_keys_and_warns(tmp_path):
    raw = {"base": [str(REPO / "configs" / "demo.yaml")], "seeds": [0], "output": str(tmp_path / "out"),
           "variants": {"rode": []}, "arguments": ["--data.demo_train_size", "16", "--data.train_tasks", "[recipe]"]}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.warns(FutureWarning, match=r"grid.yaml: arguments: old data keys \(--data.train_tasks\)"):
        grid = Grid.from_file(path)
    # Old source keys stay for the command line, which merges them with each run's config files when it starts.
    assert grid.arguments == ["--data.demo_train_size", "16", "--data.tasks.train", "[recipe]"]
    assert "--data.train_tasks" not in fit_command(grid, grid.runs[0])

def test_a_grid_on_the_transformers_base(tmp_path, cli_demo_dir):
    """The same grid machinery with model.base: transformers (a tiny Qwen2-VL directory): every run trains, tests and
    reports, the router statistics included."""
    from tests.tiny_vlm import IM_END, save_tiny_qwen2vl

    directory = save_tiny_qwen2vl(tmp_path / "qwen2vl")
    base = ["--model.base", "transformers", "--model.transformers.path", str(directory),
            "--model.transformers.dtype", "fp32", "--model.transformers.end_of_turn", IM_END]
    grid = Grid.from_file(_grid_file(tmp_path, cli_demo_dir, "qwen", VARIANTS, [0], extra=base))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "_execute", forked_execute)
        records = run_grid(grid, announce=lambda line: None)
    assert sorted(r["variant"] for r in records) == ["lora_r8", "rode"]
    rode = next(r for r in records if r["variant"] == "rode")
    assert set(rode["results"]) == {"unifood", "nutrition5k"} and rode["router"]
    assert experiments_main(["report", str(grid.path)]) == 0


def test_the_report_names_the_paired_intervals_that_exclude_zero():
    from rode_lightning.experiments.report import METRICS, _excluding_zero

    def paired(mean, low, high):
        return {"n": 3, "mean": mean, "std": 0.1, "low": low, "high": high, "better": 0, "worse": 3}

    report = {"variants": ["rode", "lora", "top1"], "paired_differences": {
        "lora": {"unifood": {"ingredient_iou": paired(-0.1, -0.2, -0.01), "pmae_average": paired(2.0, 0.5, 3.5)}},
        "top1": {"unifood": {"ingredient_iou": paired(-0.1, -0.3, 0.1), "pmae_average": paired(-2.0, -3.0, -1.0)}}}}
    line = _excluding_zero(report, "unifood", METRICS)
    assert line.startswith("Intervals that exclude zero: lora IoU worse (-0.100 [-0.200, -0.010]")
    assert "lora pMAE avg. worse (+2.0" in line and "top1 pMAE avg. better (-2.0" in line
    assert "top1 IoU" not in line
    assert _excluding_zero(report, "nutrition5k", METRICS) == "No paired interval excludes zero."
