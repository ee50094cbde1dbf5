"""Ctrl-C and SIGTERM during fit: a checkpoint, the printed command that resumes, and after it the weights of an
uninterrupted run, bit for bit."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rode_lightning.adapters.saving import WEIGHTS_NAME
from tests.cli_process import run_cli_process
from tests.conftest import tiny_cli_args

REPO = Path(__file__).parents[1]
# Two epochs of 4 batches; one step in the middle of the first epoch is where the signal comes.
STEPS = ["--trainer.limit_train_batches", "4", "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "1"]


def run(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # One thread: bit-equality across processes must not depend on how many threads a BLAS call gets (in the
    # full suite, the uninterrupted run's losses once differed from a clean run's in the 6th digit).
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return run_cli_process(arguments, cwd, env, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cli_demo_dir) -> dict[str, torch.Tensor]:
    logs = tmp_path_factory.mktemp("uninterrupted") / "logs"
    result = run(["fit", *tiny_cli_args(cli_demo_dir, logs, *STEPS)], logs.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(logs / "demo" / "version_0" / "adapter" / WEIGHTS_NAME)


@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupted_fit_resumes_with_the_printed_command_to_the_uninterrupted_weights(
        tmp_path, cli_demo_dir, uninterrupted, name, code):
    logs = tmp_path / "logs"
    signal_at = ["--trainer.callbacks+=tests.signal_at_step.SignalAtStep", "--trainer.callbacks.step=2",
                 f"--trainer.callbacks.name={name}"]
    interrupted = run(["fit", *tiny_cli_args(cli_demo_dir, logs, *STEPS, *signal_at)], tmp_path)
    output = interrupted.stdout + interrupted.stderr
    assert interrupted.returncode == code, output[-3000:]
    run_dir = logs / "demo" / "version_0"
    checkpoint = run_dir / "checkpoints" / "interrupted-step=2.ckpt"
    assert checkpoint.is_file(), output[-3000:]
    assert f"interrupted by {name} at step 2; checkpoint {checkpoint}" in output
    command = output.split("resume with:\n", 1)[1].splitlines()[0].strip()
    arguments = shlex.split(command)
    assert arguments[:4] == ["python", "-m", "rode_lightning", "fit"]
    assert arguments[arguments.index("--ckpt_path") + 1] == str(checkpoint)
    assert "tests.signal_at_step.SignalAtStep" in command  # the command as given, with the resume added

    # Resumed as printed, without the signal (it was a one-off, not part of the run).
    resume = [argument for argument in arguments[3:] if "signal_at_step" not in argument
              and not argument.startswith(("--trainer.callbacks.step=", "--trainer.callbacks.name="))]
    resumed = run(resume, tmp_path)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    final = load_file(run_dir / "adapter" / WEIGHTS_NAME)  # the same log directory: the version is pinned
    assert set(final) == set(uninterrupted)
    for key, tensor in uninterrupted.items():
        assert torch.equal(final[key], tensor), key
