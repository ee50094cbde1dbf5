"""``python -m rode_lightning ...`` in a process of its own, without paying for a new interpreter each time.

A fresh interpreter spends about 6 s importing torch, Lightning, transformers and open_clip before the command line
does anything; the tests that run the CLI as a separate process (a distributed run, a run that must not share this
process's state) paid it for every run. Here a fork server imports the CLI once, and every run is a fork of it: a
separate process with its own working directory, environment, output files and exit status, running the same
``run_command_line`` as ``python -m rode_lightning``. A distributed run's other ranks are started by Lightning as real
``python -m rode_lightning`` processes, as always.

Two things differ from a new interpreter, and are made equal here: the thread count (the OpenMP runtime reads
``OMP_NUM_THREADS`` when it is loaded, in the server: the child sets it from its environment) and ``__main__``
(Lightning builds the other ranks' command from ``__main__.__spec__`` and ``sys.argv``: the child sets them as
``python -m rode_lightning`` would).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# The CLI, and what it imports only when a run needs it (peft for plain LoRA, with bitsandbytes and torchao where
# installed; datasets for Hugging Face sources; open_clip and rouge_score for the LLaVA base and its recipe scores):
# every fork then starts with them loaded.
_PRELOAD = ["rode_lightning.cli", "tests.cli_process", "peft", "datasets", "open_clip", "rouge_score.rouge_scorer"]


def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def _run_in_child(arguments: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str, append: bool,
                  usage: str) -> None:
    os.setpgrp()  # its own process group: a timeout kills the run and the ranks it started
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, stdout), (2, stderr)):
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        handle = os.open(path, flags, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    import torch

    if env.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    main = sys.modules["__main__"]
    main.__spec__ = importlib.util.find_spec("rode_lightning.__main__")
    sys.argv = [main.__spec__.origin, *arguments]
    from rode_lightning.cli import run_command_line

    try:
        run_command_line(arguments)  # SystemExit and exceptions end the process as they end an interpreter
    finally:
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        Path(usage).write_text(str(peak))


def run_cli_process(arguments: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300,
                    output: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m rode_lightning ARGUMENTS`` in ``cwd`` with environment ``env`` (default: this process's)
    as a forked process; the result as ``subprocess.run(..., capture_output=True, text=True)`` gives it. With
    ``output``, stdout and stderr are appended to that file instead (and come back empty). The result's
    ``peak_memory_kb`` is the process's peak resident memory (or its children's, whichever is larger)."""
    env = dict(os.environ if env is None else env)
    command = ["python", "-m", "rode_lightning", *arguments]
    with tempfile.TemporaryDirectory() as folder:
        stdout = str(output) if output else str(Path(folder) / "stdout")
        stderr = str(output) if output else str(Path(folder) / "stderr")
        usage = Path(folder) / "usage"
        process = _context().Process(target=_run_in_child, args=(list(arguments), str(cwd), env, stdout, stderr,
                                                                   output is not None, str(usage)))
        process.start()
        process.join(timeout)
        read = (lambda path: "" if output else Path(path).read_text(errors="replace"))
        if process.exitcode is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.join()
            raise subprocess.TimeoutExpired(command, timeout, read(stdout), read(stderr))
        result = subprocess.CompletedProcess(command, process.exitcode, read(stdout), read(stderr))
        result.peak_memory_kb = int(usage.read_text()) if usage.is_file() else 0
        return result

