"""A user's mistake through the real command line ends in one clear line: exit status 2, no traceback, the file, key
or value named. A mistake in the configuration is found before anything runs, so it is all stderr holds (at most 3
lines with Lightning's own); one found while the run sets up (data, adapter) follows the run's information lines
(the data summary). ``RODE_TRACEBACK=1`` brings the traceback back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rode_lightning.adapters.saving import CONFIG_NAME, WEIGHTS_NAME
from tests.conftest import tiny_cli_args

REPO = Path(__file__).parents[1]


def run_cli(arguments: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **env,
                   "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rode_lightning", *arguments], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def unifood_without_test(tmp: Path) -> str:
    from rode_lightning.data.demo import generate_demo_unifood

    root = generate_demo_unifood(tmp / "mine", splits={"train": 8, "val": 4}, image_size=32)
    return str(root)


def corrupt_adapter(tmp: Path) -> str:
    folder = tmp / "adapter"
    write(folder / CONFIG_NAME, json.dumps({"format_version": 1, "adapter": {}}))
    write(folder / WEIGHTS_NAME, "not a safetensors file")
    return str(folder)


# (subcommand, arguments (a callable of the tmp folder where files are needed), what stderr must name). The first
# group is found before the run starts.
BEFORE_THE_RUN = 10
MISTAKES = {
    "unknown key": ("fit", ["--model.adapter.rnaks", "[2]"], "--model.adapter.rnaks"),
    "wrong type": ("fit", ["--model.adapter.ranks", "[a]"], 'Parser key "model.adapter.ranks"'),
    "missing config file": ("fit", ["--config", "/nonexistent/run.yaml"], "/nonexistent/run.yaml"),
    "empty rank list": ("fit", ["--model.adapter.ranks", "[]"], "the list of expert ranks is empty"),
    "unknown task": ("fit", ["--data.train_tasks", "[cooking]"], "data.train_tasks: ['cooking']"),
    "unknown dataset": ("fit", ["--data.datasets", "[food102]"], "data.datasets: ['food102']"),
    "val fraction out of range": ("fit", ["--data.val_fraction", "1.5"], "data.val_fraction: 1.5"),
    "missing data root": ("fit", ["--data.unifood_root", "/nonexistent/unifood"], "data.unifood_root: /nonexistent"),
    "dataset listed without its root": ("fit", lambda tmp: ["--data.unifood_root", str(tmp),
                                                            "--data.datasets", "[unifood, nutrition5k]"],
                                        "set data.nutrition5k_root"),
    "missing vocabulary file": ("fit", ["--data.ingredient_vocabulary", "/nonexistent/vocabulary.json"],
                                "/nonexistent/vocabulary.json"),
    "missing adapter folder": ("test", ["--model.adapter_path", "/nonexistent/adapter"],
                               f"/nonexistent/adapter/{WEIGHTS_NAME} does not exist"),
    "corrupt adapter": ("test", lambda tmp: ["--model.adapter_path", corrupt_adapter(tmp)], "adapter"),
    "predict without a source": ("predict", [], "data.predict_source"),
    "malformed predict request": ("predict", lambda tmp: ["--data.predict_source",
                                                          write(tmp / "requests.jsonl", '{"image": "a.png"\n')],
                                  "requests.jsonl"),
    "test without a test split": ("test", lambda tmp: ["--data.unifood_root", unifood_without_test(tmp)],
                                  "test.jsonl"),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_mistake_ends_in_one_clear_line(name, tmp_path, cli_demo_dir):
    subcommand, arguments, named = MISTAKES[name]
    arguments = arguments(tmp_path) if callable(arguments) else arguments
    result = run_cli([subcommand, *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), *arguments], tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[-1].startswith("error: ") and named in lines[-1], lines[-1]
    assert sum(line.startswith("error: ") for line in lines) == 1
    if list(MISTAKES).index(name) < BEFORE_THE_RUN:
        assert len(lines) <= 3, result.stderr


def test_the_traceback_is_shown_when_asked_for(tmp_path, cli_demo_dir):
    result = run_cli(["fit", *tiny_cli_args(cli_demo_dir, tmp_path / "logs"),
                      "--data.unifood_root", "/nonexistent/unifood"], tmp_path, RODE_TRACEBACK="1")
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert "FileNotFoundError: data.unifood_root: /nonexistent/unifood" in result.stderr
