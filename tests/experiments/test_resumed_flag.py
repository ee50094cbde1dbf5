"""The run record's ``resumed`` flag, event by event, with the fit and test commands played by a stand-in that
writes what the real ones write (``last.ckpt`` with its step, the adapter, the test results), so that each sequence
runs in milliseconds.

Two sequences made the runner write ``resumed: true`` for runs that were not resumed (both fail on the runner of
7aba74d, which decided ``resumed = last.ckpt exists``):

1. the fit ran to its last step and wrote ``last.ckpt``; the grid was stopped (Ctrl-C) before it wrote ``fit.json``;
   run again, it "resumed" the finished fit: no step trained, the record said resumed, its fit time that of loading;
2. a fit was killed mid-way; the grid file was changed (here the number of epochs) and run again into the same
   output: the old command's checkpoint was resumed by the new command.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from rode_lightning.experiments import runner
from rode_lightning.experiments.grid import Grid
from rode_lightning.experiments.runner import run_directory, run_grid

REPO = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 3


class StandIn:
    """Plays ``fit`` (train from ``--ckpt_path``'s step, or 0, to ``max_epochs x 3`` steps, checkpointing each step)
    and ``test``; ``fail_fit_at`` kills the fit at a step (its exit status -9), ``stop_grid_after_fit`` raises
    KeyboardInterrupt in the runner once the fit has ended (Ctrl-C reaching the grid as its fit finishes)."""

    def __init__(self, fail_fit_at: int | None = None, stop_grid_after_fit: bool = False):
        self.fail_fit_at = fail_fit_at
        self.stop_grid_after_fit = stop_grid_after_fit
        self.trained: list[int] = []  # steps trained by each fit

    def __call__(self, command: list[str], log: Path, threads):
        arguments = dict(zip(command, command[1:]))
        if command[3] == "test":
            directory = Path(arguments["--trainer.logger.init_args.save_dir"]) / arguments[
                "--trainer.logger.init_args.name"] / arguments["--trainer.logger.init_args.version"] / "results"
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "test_results.json").write_text(json.dumps({"results": {"unifood": {"ingredient_iou": 0.5}}}))
            return 0.1, 0.2
        checkpoints = Path(next(a.split("=", 1)[1] for a in command if a.startswith("--trainer.callbacks.dirpath=")))
        run = checkpoints.parent
        step = int(torch.load(arguments["--ckpt_path"])["global_step"]) if "--ckpt_path" in arguments else 0
        target = int(arguments["--trainer.max_epochs"]) * STEPS_PER_EPOCH
        first = step
        while step < target:
            step += 1
            checkpoints.mkdir(parents=True, exist_ok=True)
            torch.save({"global_step": step}, checkpoints / "last.ckpt")
            if step == self.fail_fit_at:
                self.fail_fit_at = None
                self.trained.append(step - first)
                raise RuntimeError(f"`{shlex.join(command)}` exited with -9")
        self.trained.append(step - first)
        (run / "adapter").mkdir(exist_ok=True)
        save_file({"lora_A": torch.zeros(2, 3)}, run / "adapter" / "adapter.safetensors")
        if self.stop_grid_after_fit:
            self.stop_grid_after_fit = False
            raise KeyboardInterrupt
        return 5.0, 0.3


def _grid(tmp_path: Path, epochs: int) -> Grid:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"base": [str(REPO / "configs" / "demo.yaml")],
                                    "arguments": ["--trainer.max_epochs", str(epochs)],
                                    "variants": {"rode": [str(REPO / "configs" / "variants" / "rode_2_4_8_16.yaml")]},
                                    "seeds": [0], "output": str(tmp_path / "out")}))
    return Grid.from_file(path)


@pytest.fixture
def quiet_runner(monkeypatch):
    monkeypatch.setattr(runner, "prepare_demo_base", lambda grid, announce: None)


def test_a_fit_that_ended_as_the_grid_was_stopped_is_not_called_resumed(tmp_path, monkeypatch, quiet_runner):
    grid = _grid(tmp_path, epochs=2)
    stand_in = StandIn(stop_grid_after_fit=True)
    monkeypatch.setattr(runner, "_execute", stand_in)
    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, announce=lambda line: None)
    directory = run_directory(grid, grid.runs[0])
    assert (directory / "checkpoints" / "last.ckpt").is_file() and not (directory / "fit.json").exists()
    lines: list[str] = []
    [record] = run_grid(grid, announce=lines.append)
    assert stand_in.trained == [6, 0]  # the second fit went on from the last step: nothing left to train
    assert record["resumed"] is False and record["fit_attempts"] == 2
    assert any("resuming from step 6" in line for line in lines)
    # The first attempt's time is counted (the runner noted it as the interrupt went through).
    attempts = json.loads((directory / runner.ATTEMPTS).read_text())
    assert record["fit_seconds"] == pytest.approx(sum(attempt["seconds"] for attempt in attempts))
    assert record["fit_seconds_complete"] is True


def test_a_checkpoint_of_another_fit_command_is_moved_aside_not_resumed(tmp_path, monkeypatch, quiet_runner):
    stand_in = StandIn(fail_fit_at=2)
    monkeypatch.setattr(runner, "_execute", stand_in)
    with pytest.raises(RuntimeError, match="exited with -9"):
        run_grid(_grid(tmp_path, epochs=2), announce=lambda line: None)
    changed = _grid(tmp_path, epochs=3)  # the grid file edited, the same output directory
    lines: list[str] = []
    [record] = run_grid(changed, announce=lines.append)
    assert stand_in.trained == [2, 9]  # the whole new fit, from step 0
    assert record["resumed"] is False and record["fit_attempts"] == 1
    directory = run_directory(changed, changed.runs[0])
    assert any("was not written by this fit command" in line and "checkpoints.stale-1" in line for line in lines)
    assert (directory / "checkpoints.stale-1" / "last.ckpt").is_file()
    assert not any("--ckpt_path" in line for line in lines)


def test_an_interrupted_fit_resumes_and_says_so(tmp_path, monkeypatch, quiet_runner):
    grid = _grid(tmp_path, epochs=2)
    stand_in = StandIn(fail_fit_at=2)
    monkeypatch.setattr(runner, "_execute", stand_in)
    with pytest.raises(RuntimeError, match="exited with -9"):
        run_grid(grid, announce=lambda line: None)
    lines: list[str] = []
    [record] = run_grid(grid, announce=lines.append)
    assert stand_in.trained == [2, 4]
    assert record["resumed"] is True and record["fit_attempts"] == 2
    assert any("resuming from step 2" in line and "--ckpt_path" in line for line in lines)
    assert json.loads((run_directory(grid, grid.runs[0]) / "fit.json").read_text())["resumed_from_step"] == 2


def test_a_checkpoint_without_the_record_of_its_command_starts_over(tmp_path, monkeypatch, quiet_runner):
    """A run directory from a runner that kept no ``fit_attempts.json`` (an older grid): its command is unknown."""
    grid = _grid(tmp_path, epochs=1)
    checkpoints = run_directory(grid, grid.runs[0]) / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({"global_step": 2}, checkpoints / "last.ckpt")
    stand_in = StandIn()
    monkeypatch.setattr(runner, "_execute", stand_in)
    [record] = run_grid(grid, announce=lambda line: None)
    assert stand_in.trained == [3] and record["resumed"] is False
