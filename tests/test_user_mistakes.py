"""A user's mistake through the command line ends in one clear line: exit status 2, no traceback, the file, key or
value named, and stderr short (at most 3 lines: the run's information goes to stdout). ``RODE_TRACEBACK=1`` brings
the traceback back.

Every mistake runs through ``rode_lightning.cli.run_command_line``, the function behind ``python -m rode_lightning``,
in this process (a fresh interpreter per mistake cost about 15 s of imports each, 10 minutes for the table); a few
representative ones, and the traceback switch, also run through a real ``python -m rode_lightning`` subprocess, which
proves the entry point, the exit status and the whole of stderr as a user sees them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from rode_lightning.adapters.saving import CONFIG_NAME, WEIGHTS_NAME
from tests.conftest import tiny_cli_args

REPO = Path(__file__).parents[1]


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def run_cli(arguments: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **env,
                   "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rode_lightning", *arguments], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


def run_in_process(arguments: list[str], cwd: Path, capfd, monkeypatch, **env) -> Finished:
    """``python -m rode_lightning ARGUMENTS`` without the new interpreter: the same function, its exit status from
    ``SystemExit`` (0 when it returns), and what it wrote to the file descriptors 1 and 2 (so that output of handlers
    made before the capture counts too)."""
    from rode_lightning.cli import run_command_line

    monkeypatch.chdir(cwd)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capfd.readouterr()
    try:
        run_command_line(arguments)
        returncode = 0
    except SystemExit as stop:
        returncode = stop.code if isinstance(stop.code, int) else 1
    output, errors = capfd.readouterr()
    return Finished(returncode, output, errors)


def write_bytes(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def unifood(tmp: Path, splits: dict[str, int] | None = None) -> Path:
    from rode_lightning.data.datasets.unifood.demo import generate_demo_unifood

    return generate_demo_unifood(tmp / "mine", splits=splits or {"train": 8, "val": 4, "test": 4}, image_size=32)


def unifood_with_a_broken_line(tmp: Path) -> str:
    root = unifood(tmp)
    with open(root / "annotations" / "train.jsonl", "a") as file:
        file.write('{"id": "broken", \n')
    return str(root)


def unifood_with_an_unreadable_image(tmp: Path) -> str:
    root = unifood(tmp)
    next(iter(sorted((root / "images").iterdir()))).write_text("not an image")
    return str(root)


def corrupt_adapter(tmp: Path) -> str:
    folder = tmp / "adapter"
    write(folder / CONFIG_NAME, json.dumps({"format_version": 1, "adapter": {}}))
    write(folder / WEIGHTS_NAME, "not a safetensors file")
    return str(folder)


def adapter(tmp: Path, weights: str | None = None, **config) -> str:
    """An adapter folder with the config of ``AdapterConfig(**config)`` (the demo's adapter by default), and
    ``weights`` as its weights file when given."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    from rode_lightning.adapters.config import AdapterConfig

    import yaml

    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())["model"]["adapter"]
    folder = tmp / "adapter"
    adapter_config = asdict(AdapterConfig(**{**demo, **config}))
    write(folder / CONFIG_NAME, json.dumps({"format_version": 1, "adapter": adapter_config}))
    if weights is None:
        save_file({"placeholder": torch.zeros(1)}, folder / WEIGHTS_NAME)
    else:
        write(folder / WEIGHTS_NAME, weights)
    return str(folder)


def empty_folder(tmp: Path, name: str = "empty") -> str:
    (tmp / name).mkdir()
    return str(tmp / name)


def llama_with_a_wrong_shape(tmp: Path) -> list[str]:
    """A LLaMA folder saved by transformers for the demo tokenizer, with one tensor cut to the wrong shape."""
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from rode_lightning.data.tokenizer import load_tokenizer

    folder = tmp / "llama"
    config = LlamaConfig(vocab_size=len(load_tokenizer("demo")), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(32, 16)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return ["--model.language.path", str(folder)]


def vision_checkpoint(tmp: Path, tensors: dict | None) -> str:
    from safetensors.torch import save_file

    path = tmp / "open_clip_model.safetensors"
    if tensors is None:
        write(path, "not a safetensors file")
    else:
        save_file(tensors, path)
    return str(path)


# (subcommand, arguments (or a callable of the test's tmp folder, where files are needed), what the error line
# must name).

def sources(*entries: str) -> list[str]:
    """``--data.sources`` of the given entries (YAML flow mappings)."""
    return ["--data.sources", f"[{', '.join(entries)}]"]

MISTAKES = {
    # The configuration: found before anything runs.
    "unknown key": ("fit", ["--model.adapter.rnaks", "[2]"], "--model.adapter.rnaks"),
    "wrong type": ("fit", ["--model.adapter.ranks", "[a]"], 'Parser key "model.adapter.ranks"'),
    "value of none of a key's types": ("fit", ["--trainer.precision", "17"],
                                       "trainer.precision: 17 is not allowed; expected one of 64, 32, 16,"),
    "unknown method": ("fit", ["--model.adapter.method", "moe"],
                       "adapter.method: 'moe' is not one of rode, softmax, top1, cluster, lora"),
    "missing config file": ("fit", ["--config", "/nonexistent/run.yaml"], "/nonexistent/run.yaml"),
    "config file that is not YAML": ("fit", lambda tmp: ["--config", write(tmp / "run.yaml", "model: [unclosed\n")],
                                     "run.yaml: line 2, column 1: not valid YAML"),
    "config file that is not UTF-8": ("fit", lambda tmp: ["--config", write_bytes(tmp / "run.yaml", b"seed: \xe9\n")],
                                      "run.yaml: not UTF-8 text"),
    "empty rank list": ("fit", ["--model.adapter.ranks", "[]"], "the list of expert ranks is empty"),
    "conflicting method and ranks": ("fit", ["--model.adapter.method", "lora", "--model.adapter.ranks", "[2, 4]"],
                                     "method 'lora' takes exactly one rank, got [2, 4]"),
    "weight for a task that does not exist": ("fit", sources("{dataset: unifood, task_weights: {cooking: 2.0}}"),
                                              "data.sources[0].task_weights: unknown task 'cooking'"),
    "negative learning rate": ("fit", ["--model.learning_rate", "-1"], "model.learning_rate: -1.0"),
    "unknown task": ("fit", ["--data.tasks.train", "[cooking]"], "data.tasks.train: ['cooking']"),
    "unknown dataset": ("fit", sources("{dataset: food102}"), "data.sources[0].dataset: 'food102'"),
    "val fraction out of range": ("fit", sources("{dataset: unifood, val_fraction: 1.5}"),
                                  "data.sources[0].val_fraction=1.5"),
    "missing data root": ("fit", sources("{dataset: unifood, root: /nonexistent/unifood}"),
                          "data.sources[0].root: /nonexistent"),
    "dataset listed without its root": ("fit", lambda tmp: sources(f"{{dataset: unifood, root: {tmp}}}",
                                                                   "{dataset: nutrition5k}"),
                                        "data.sources[1]: no root, so a demo copy"),
    "missing vocabulary file": ("fit", ["--data.ingredient_vocabulary", "/nonexistent/vocabulary.json"],
                                "/nonexistent/vocabulary.json"),
    "unknown base": ("fit", ["--model.base", "qwen"], "model.base"),
    "transformers base without its directory": ("fit", ["--model.base", "transformers"],
                                                "model.transformers.path: not set"),
    "transformers base from a folder that is not a model": (
        "fit", lambda tmp: ["--model.base", "transformers", "--model.transformers.path", str(tmp)],
        "has no config.json"),
    "unknown adapter scope": ("fit", ["--model.adapter.scope", "vision"], "adapter.scope: 'vision'"),
    # The environment.
    "a GPU asked for where there is none": ("fit", ["--trainer.accelerator", "gpu"],
                                            "trainer.accelerator asks for a GPU, but PyTorch sees none here"),
    "a strategy that cannot run here": ("fit", ["--trainer.strategy", "fsdp"], "The strategy `fsdp` requires a GPU"),
    # Files: weights and checkpoints.
    "missing checkpoint": ("fit", ["--ckpt_path", "/nonexistent/last.ckpt"], "--ckpt_path /nonexistent/last.ckpt"),
    "a checkpoint name known only inside the run that trained": ("test", ["--ckpt_path", "best"],
                                                                 "--ckpt_path best: a name Lightning resolves only"),
    "corrupt checkpoint": ("fit", lambda tmp: ["--ckpt_path", write(tmp / "last.ckpt", "half a checkpoint")],
                           "last.ckpt is not a Lightning checkpoint"),
    "missing adapter folder": ("test", ["--model.adapter_path", "/nonexistent/adapter"],
                               f"/nonexistent/adapter/{WEIGHTS_NAME} does not exist"),
    "corrupt adapter": ("test", lambda tmp: ["--model.adapter_path", corrupt_adapter(tmp)],
                        f"{CONFIG_NAME} is not an adapter config"),
    "truncated adapter weights": ("test", lambda tmp: ["--model.adapter_path", adapter(tmp, weights="half a file")],
                                  f"{WEIGHTS_NAME} is truncated or corrupt"),
    "adapter of another shape": ("test", lambda tmp: ["--model.adapter_path", adapter(tmp, ranks=[2])],
                                 "does not fit the configured adapter: ranks: checkpoint [2]"),
    "tokenizer folder without a tokenizer": ("fit", lambda tmp: ["--model.tokenizer", empty_folder(tmp)],
                                             "holds no tokenizer"),
    "LLaVA folder without config.json": ("fit", lambda tmp: ["--model.language.path", empty_folder(tmp)],
                                         "has no config.json"),
    "language weight of the wrong shape": ("fit", llama_with_a_wrong_shape,
                                           "tensor model.layers.0.self_attn.q_proj.weight has shape (32, 16)"),
    "missing vision checkpoint": ("fit", ["--model.vision.checkpoint", "/nonexistent/open_clip.safetensors"],
                                  "model.vision.checkpoint: /nonexistent/open_clip.safetensors does not exist"),
    "corrupt vision checkpoint": ("fit", lambda tmp: ["--model.vision.checkpoint", vision_checkpoint(tmp, None)],
                                  "open_clip_model.safetensors is truncated or not a weight file"),
    "vision weight of the wrong shape": ("fit", lambda tmp: ["--model.vision.checkpoint", vision_checkpoint(
        tmp, {"visual.conv1.weight": torch.zeros(3, 3, 3, 3)})], "tensor visual.conv1.weight has shape (3, 3, 3, 3)"),
    # Data.
    "test without a test split": ("test", lambda tmp: sources(f"{{dataset: unifood, root: "
                                                              f"{unifood(tmp, {'train': 8, 'val': 4})}}}"),
                                  "test.jsonl"),
    "malformed annotation line": ("fit", lambda tmp: sources(f"{{dataset: unifood, root: "
                                                             f"{unifood_with_a_broken_line(tmp)}}}"),
                                  "train.jsonl:9: malformed JSON"),
    "unreadable image": ("fit", lambda tmp: sources(f"{{dataset: unifood, root: "
                                                    f"{unifood_with_an_unreadable_image(tmp)}}}"),
                         "unreadable image"),
    "Nutrition5k root of another layout": ("fit", lambda tmp: sources(f"{{dataset: nutrition5k, root: "
                                                                      f"{empty_folder(tmp)}}}"),
                                           "rgb_train_ids.txt does not exist"),
    "Hugging Face path that is no dataset": ("fit", lambda tmp: sources(
        f"{{dataset: huggingface, root: {empty_folder(tmp)}, options: {{image: photo, category: label}}}}"),
        "data.sources[0].root"),
    "malformed vocabulary": ("fit", lambda tmp: ["--data.ingredient_vocabulary", write(tmp / "vocabulary.json", "{")],
                             "vocabulary.json: malformed JSON"),
    # Predict input.
    "predict without a source": ("predict", [], "data.predict.source"),
    "malformed predict request": ("predict", lambda tmp: ["--data.predict.source",
                                                          write(tmp / "requests.jsonl", '{"image": "a.png"\n')],
                                  "requests.jsonl"),
    "predict folder without images": ("predict", lambda tmp: ["--data.predict.source", empty_folder(tmp)],
                                      "holds no image"),
    "predict request of a missing image": ("predict", lambda tmp: ["--data.predict.source", write(
        tmp / "requests.jsonl", '{"image": "/nonexistent/a.png", "question": "What is it?"}\n')],
        "none of the 1 requests"),
}


def assert_one_clear_line(result, named: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[-1].startswith("error: ") and named in lines[-1], lines[-1]
    assert sum(line.startswith("error: ") for line in lines) == 1
    assert len(lines) <= 3, result.stderr


@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_mistake_ends_in_one_clear_line(name, tmp_path, cli_demo_dir, capfd, monkeypatch):
    subcommand, arguments, named = MISTAKES[name]
    arguments = arguments(tmp_path) if callable(arguments) else arguments
    result = run_in_process([subcommand, *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), *arguments], tmp_path,
                            capfd, monkeypatch)
    assert_one_clear_line(result, named)


# The entry point as a user meets it, in a new interpreter, with the mistake found last (a file read once the model is
# built); every mistake, the parser's and the data's included, is checked in-process above (each new interpreter
# costs ~10 s of imports on the reference machine).
THROUGH_A_NEW_INTERPRETER = ("corrupt adapter",)


@pytest.mark.parametrize("name", THROUGH_A_NEW_INTERPRETER)
def test_a_mistake_through_python_dash_m_ends_in_one_clear_line(name, tmp_path, cli_demo_dir):
    subcommand, arguments, named = MISTAKES[name]
    arguments = arguments(tmp_path) if callable(arguments) else arguments
    result = run_cli([subcommand, *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), *arguments], tmp_path)
    assert_one_clear_line(result, named)


def test_the_table_covers_at_least_30_mistakes():
    assert len(MISTAKES) >= 30


def test_the_traceback_is_shown_when_asked_for(tmp_path, cli_demo_dir):
    from tests.cli_process import run_cli_process

    result = run_cli_process(["fit", *tiny_cli_args(cli_demo_dir, tmp_path / "logs"),
                              *sources("{dataset: unifood, root: /nonexistent/unifood}")], tmp_path,
                             {**os.environ, "TOKENIZERS_PARALLELISM": "false", "RODE_TRACEBACK": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert "Error: data.sources[0].root: /nonexistent/unifood" in result.stderr.splitlines()[-1]
