"""Running a grid: every (variant, seed) an ordinary ``fit`` then ``test`` through the CLI, in its own directory.

A run's directory ``<output>/runs/<variant>/seed_<s>`` is its TensorBoard log directory as well; it holds
``checkpoints/last.ckpt`` while the fit runs, ``adapter/`` when it has ended, and ``run.json`` when the test has
scored it. ``run.json`` is written last (to a temporary name, then renamed), so its presence means done:

* a finished run is skipped;
* a fit that was interrupted resumes from ``last.ckpt`` (``--ckpt_path``; the existing exact-resume machinery gives
  the weights an uninterrupted run ends with), when ``fit_attempts.json`` says the same fit command wrote it (a
  checkpoint of another command is moved aside and the fit starts over); every attempt's time is counted;
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
from datetime import datetime, timezone
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


def _write_atomically(path: Path, value: dict | list) -> None:
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
        _write_atomically(progress, _fit(grid, run, directory, log, threads, announce))
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
              "peak_memory_gb": max(fit["peak_memory_gb"], test_memory), "resumed": fit["resumed"],
              "fit_attempts": fit.get("attempts", 1), "fit_seconds_complete": fit.get("seconds_complete", True),
              "finished": finished_date()}
    _write_atomically(result, record)
    return record


ATTEMPTS = "fit_attempts.json"


def finished_date(path: Path | None = None) -> str:
    """The UTC date a run was scored: today, or the day ``path`` (an older ``run.json`` without it) was written."""
    moment = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc) if path else datetime.now(timezone.utc)
    return moment.date().isoformat()


def _fit(grid: Grid, run: Run, directory: Path, log: Path, threads: int | None, announce) -> dict:
    """Fit the run, from ``last.ckpt`` where an earlier attempt of the same command left one; the fit's record.

    ``resumed`` is true only when this attempt went on from a step an earlier, unfinished attempt of the *same*
    command had reached, and trained further. Two sequences once wrote it for runs that were not resumed
    (tests/experiments/test_resumed_flag.py): a fit that had ended but whose record was never written (the grid was
    stopped between the two) was "resumed" without a step trained, its time that of loading; and a checkpoint left
    by another fit command (the grid file changed, the output directory reused) was resumed as if it were this
    run's. Now the first counts as one attempt's work with every attempt's time, and the second is moved aside
    (``checkpoints.stale-<n>``) and the fit starts from the beginning.
    """
    checkpoints = directory / "checkpoints"
    last = checkpoints / "last.ckpt"
    command = fit_command(grid, run)
    attempts_path = directory / ATTEMPTS
    attempts = json.loads(attempts_path.read_text()) if attempts_path.is_file() else []
    if last.exists() and (not attempts or attempts[-1]["command"] != command):
        stale = _aside(checkpoints)
        announce(f"{run.key}: {last} was not written by this fit command (the grid changed, or the directory comes "
                 f"from an older grid); moved to {stale}, fitting from the start")
        attempts = []
    start_step = checkpoint_step(last) if last.exists() else None
    resume = last if start_step is not None else None
    full = fit_command(grid, run, resume=resume)
    announce(f"{run.key}: {'resuming from step ' + str(start_step) if resume else 'fit'}: {shlex.join(full)}")
    attempts.append({"command": command, "from_step": start_step, "seconds": None})
    _write_atomically(attempts_path, attempts)
    began = time.perf_counter()
    try:
        seconds, memory = _execute(full, log, threads)
    finally:
        attempts[-1]["seconds"] = time.perf_counter() - began
        _write_atomically(attempts_path, attempts)
    end_step = checkpoint_step(last) if last.exists() else None
    trained_here = start_step is None or end_step is None or end_step > start_step
    return {"seconds": sum(attempt["seconds"] or 0.0 for attempt in attempts), "peak_memory_gb": memory,
            "resumed": bool(start_step) and trained_here, "attempts": len(attempts),
            "seconds_complete": all(attempt["seconds"] is not None for attempt in attempts),
            "resumed_from_step": start_step if trained_here else None}


def checkpoint_step(path: Path) -> int | None:
    """The optimizer step a Lightning checkpoint was saved at (a sharded checkpoint's folder too); ``None`` where it
    cannot be read (a file cut short)."""
    import torch

    from rode_lightning.compat import sharded_checkpoint_metadata

    try:
        source = sharded_checkpoint_metadata(path) if path.is_dir() else path
        return int(torch.load(source, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # noqa: BLE001 - unreadable means "start over", never a crashed grid
        return None


def _aside(directory: Path) -> Path:
    number = 1
    while (target := directory.with_name(f"{directory.name}.stale-{number}")).exists():
        number += 1
    directory.rename(target)
    return target


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
