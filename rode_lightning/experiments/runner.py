"""Running a grid: every (variant, seed) an ordinary ``fit`` then ``test`` through the CLI, in its own directory.

A run's directory ``<output>/runs/<variant>/seed_<s>`` is its TensorBoard log directory as well; it holds
``checkpoints/last.ckpt`` while the fit runs, ``adapter/`` when it has ended, and ``run.json`` when the test has
scored it. ``run.json`` is written last (to a temporary name, then renamed), so its presence means done:

* a finished run is skipped;
* a fit that was interrupted resumes from ``last.ckpt`` (``--ckpt_path``; the existing exact-resume machinery gives
  the weights an uninterrupted run ends with);
* a fit that ended but was not tested is only tested.

Every command is printed before it runs, and ``--print-commands`` prints them all without running anything (for a
cluster scheduler: ``--slurm`` prints a job-array script whose task ``i`` runs ``--index i``).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from safetensors import safe_open

from rode_lightning.atomic import write_json_atomically
from rode_lightning.experiments.grid import Grid, Run

RESULT = "run.json"


def run_directory(grid: Grid, run: Run) -> Path:
    return grid.output / "runs" / run.variant / f"seed_{run.seed}"


def test_directory(grid: Grid, run: Run) -> Path:
    """The log directory of the run's ``test`` (its results table and router statistics)."""
    return grid.output / "runs" / run.variant / f"seed_{run.seed}_test"


def _configs(grid: Grid, run: Run) -> list[str]:
    return [argument for file in (*grid.base, *run.overlays) for argument in ("--config", file)]


def _common(grid: Grid, run: Run, version: str) -> list[str]:
    return [*grid.arguments, "--seed_everything", str(run.seed), "--data.seed", str(run.seed),
            "--trainer.logger.init_args.save_dir", str(grid.output / "runs"),
            "--trainer.logger.init_args.name", run.variant, "--trainer.logger.init_args.version", version,
            "--trainer.enable_progress_bar", "false"]


def fit_command(grid: Grid, run: Run, resume: Path | None = None) -> list[str]:
    """The run's ``fit``: base + overlays, the grid's arguments, the seed (weights and data order), and a
    ``ModelCheckpoint`` that keeps ``last.ckpt`` for resuming."""
    command = ["python", "-m", "rode_lightning", "fit", *_configs(grid, run), *_common(grid, run, f"seed_{run.seed}"),
               "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
               f"--trainer.callbacks.dirpath={run_directory(grid, run) / 'checkpoints'}",
               "--trainer.callbacks.save_last=true", "--trainer.callbacks.save_top_k=0",
               f"--trainer.callbacks.every_n_train_steps={grid.checkpoint_every_n_steps}"]
    if resume is not None:
        command += ["--ckpt_path", str(resume)]
    return command


def test_command(grid: Grid, run: Run) -> list[str]:
    return ["python", "-m", "rode_lightning", "test", *_configs(grid, run),
            *_common(grid, run, test_directory(grid, run).name),
            "--model.adapter_path", str(run_directory(grid, run) / "adapter")]


def _execute(command: list[str], log: Path, threads: int | None) -> tuple[float, float]:
    """Runs ``command`` (its ``python`` is this interpreter) with output appended to ``log``; returns seconds and
    the peak resident memory in GB of the process and its children. A failure raises with the log's tail."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    with open(log, "a") as handle:
        handle.write(f"$ {shlex.join(command)}\n")
        handle.flush()
        process = subprocess.Popen([sys.executable, *command[1:]], stdout=handle, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"`{shlex.join(command)}` exited with {process.returncode}; the end of {log}:\n{tail}")
    return seconds, usage.ru_maxrss / 1024 ** 2


def trainable_parameters(adapter_dir: Path) -> int:
    """Every tensor the fit trained (experts, routers, cluster embedding, the projector if trained)."""
    with safe_open(str(adapter_dir / "adapter.safetensors"), framework="pt") as handle:
        return sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())


def _write_atomically(path: Path, value: dict) -> None:
    write_json_atomically(path, value, indent=2, sort_keys=True)


def run_one(grid: Grid, run: Run, threads: int | None = None, announce=print) -> dict:
    """Fit (or resume) and test one run; returns its ``run.json`` record (read back if it was done already)."""
    directory = run_directory(grid, run)
    result = directory / RESULT
    if result.is_file():
        return json.loads(result.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "commands.log"
    progress = directory / "fit.json"  # the fit's own record, once it has ended
    if not progress.is_file():
        last = directory / "checkpoints" / "last.ckpt"
        resuming = last.is_file()  # decided before the fit writes its own last.ckpt
        command = fit_command(grid, run, resume=last if resuming else None)
        announce(f"{run.key}: {'resuming' if resuming else 'fit'}: {shlex.join(command)}")
        seconds, memory = _execute(command, log, threads)
        _write_atomically(progress, {"seconds": seconds, "peak_memory_gb": memory, "resumed": resuming})
    fit = json.loads(progress.read_text())
    command = test_command(grid, run)
    announce(f"{run.key}: test: {shlex.join(command)}")
    test_seconds, test_memory = _execute(command, log, threads)
    results = test_directory(grid, run) / "results"
    scored = json.loads((results / "test_results.json").read_text())
    router = results / "router_test.json"
    record = {"variant": run.variant, "seed": run.seed, "overlays": list(run.overlays),
              "results": scored["results"], "floors": scored.get("floors", {}),
              "provenance": scored.get("provenance", {}),
              "router": json.loads(router.read_text()) if router.is_file() else None,
              "trainable_parameters": trainable_parameters(directory / "adapter"),
              "fit_seconds": fit["seconds"], "test_seconds": test_seconds,
              "peak_memory_gb": max(fit["peak_memory_gb"], test_memory), "resumed": fit["resumed"]}
    _write_atomically(result, record)
    return record


def run_grid(grid: Grid, jobs: int = 1, index: int | None = None, announce=print) -> list[dict]:
    """Every run not done yet (or only run ``index``), ``jobs`` at a time, with progress and time left."""
    runs = grid.runs if index is None else [grid.runs[index]]
    pending = [run for run in runs if not (run_directory(grid, run) / RESULT).is_file()]
    done = len(runs) - len(pending)
    if done:
        announce(f"{done} of {len(runs)} runs already done; {len(pending)} to go")
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    if pending:
        prepare_demo_base(grid, announce)
    lock = threading.Lock()
    start = time.perf_counter()
    finished: list[float] = []

    def one(run: Run) -> dict:
        began = time.perf_counter()
        record = run_one(grid, run, threads, announce)
        with lock:
            finished.append(time.perf_counter() - began)
            left = len(pending) - len(finished)
            per_run = statistics.median(finished) / jobs
            announce(f"[{done + len(finished)}/{len(runs)}] {run.key} done in {finished[-1] / 60:.1f} min; "
                     f"elapsed {(time.perf_counter() - start) / 60:.1f} min, about {left * per_run / 60:.0f} min "
                     "left")
        return record

    if jobs <= 1:
        for run in pending:
            one(run)
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, pending))
    return [json.loads((run_directory(grid, run) / RESULT).read_text()) for run in runs
            if (run_directory(grid, run) / RESULT).is_file()]


def prepare_demo_base(grid: Grid, announce=print) -> None:
    """Build the demo base before the first run when the grid's configs use it (``demo-base``), so that no run's
    time includes the build (once per cache, about 3.5 minutes on 2 cores)."""
    from rode_lightning.pretrain.build import DEMO_BASE

    files = [*grid.base, *(overlay for overlays in grid.variants.values() for overlay in overlays)]
    overrides = dict(zip(grid.arguments, grid.arguments[1:]))
    keys = ("--model.vision.checkpoint", "--model.language.path", "--model.tokenizer")
    replaced = all(key in overrides and overrides[key] != DEMO_BASE for key in keys)
    if replaced or not any(DEMO_BASE in Path(file).read_text() for file in files):
        return
    command = ["python", "-m", "rode_lightning.pretrain"]
    if "--data.demo_dir" in grid.arguments:
        command += ["--demo_dir", grid.arguments[grid.arguments.index("--data.demo_dir") + 1]]
    announce(f"demo base: {shlex.join(command)}")
    grid.output.mkdir(parents=True, exist_ok=True)
    _execute(command, grid.output / "prepare.log", None)


def print_commands(grid: Grid, slurm: bool = False, grid_argument: str | None = None) -> str:
    """Every run's commands (one line each), or a SLURM job-array script with one array task per run."""
    if slurm:
        count = len(grid.runs)
        source = grid_argument or str(grid.path)
        return "\n".join([
            "#!/bin/bash",
            f"#SBATCH --job-name=rode-grid --array=0-{count - 1}",
            "#SBATCH --nodes=1 --ntasks=1 --gpus-per-task=1",
            f"# {count} runs of {source}: run {{variant, seed}} i of the grid in array task i; afterwards:",
            f"#   python -m rode_lightning.experiments report {source}",
            f"python -m rode_lightning.experiments run {source} --index \"$SLURM_ARRAY_TASK_ID\"",
        ])
    lines = []
    for run in grid.runs:
        lines.append(f"# {run.key}")
        lines.append(shlex.join(fit_command(grid, run)))
        lines.append(shlex.join(test_command(grid, run)))
    return "\n".join(lines)
