from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from rode_lightning.data.datasets.unifood.demo import generate_demo_unifood

TINY_SPLITS = {"train": 24, "val": 8, "test": 8}


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small demo Uni-Food dataset shared by the tests that only read it."""
    return generate_demo_unifood(tmp_path_factory.mktemp("demo_unifood"), seed=0, splits=TINY_SPLITS, image_size=48)


@pytest.fixture(scope="session")
def cli_demo_dir(tmp_path_factory) -> Path:
    """Where CLI tests let the data module generate its demo data: shared, so it is generated once."""
    return tmp_path_factory.mktemp("cli_demo")


@dataclass
class TinyRuns:
    """Two runs of ``fit`` on the tiny demo configuration: RoDE ``[2, 4, 8, 16]`` and LoRA r32, a few steps each."""

    logs: Path
    rode: Path  # the adapter directories
    lora: Path


@pytest.fixture(scope="session")
def tiny_runs(cli_demo_dir, tmp_path_factory) -> TinyRuns:
    """Trained adapters for the tests of what uses a trained model (serving, the web demo)."""
    from rode_lightning.cli import main

    logs = tmp_path_factory.mktemp("tiny_runs")
    steps = ["--trainer.limit_train_batches", "2", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0",
             "--model.learning_rate", "0.01"]
    main(["fit", *tiny_cli_args(cli_demo_dir, logs, *steps)])
    lora = str(Path(__file__).parents[1] / "configs" / "variants" / "lora_r32.yaml")
    main(["fit", *tiny_cli_args(cli_demo_dir, logs, *steps, "--config", lora,
                                "--trainer.logger.init_args.name", "demo_lora_r32")])
    return TinyRuns(logs, logs / "demo" / "version_0" / "adapter", logs / "demo_lora_r32" / "version_0" / "adapter")


@pytest.fixture
def registry():
    """The adapter-method registry as it was, restored after the test (for tests that register a method)."""
    from rode_lightning.adapters.methods import METHODS

    before = dict(METHODS)
    yield METHODS
    METHODS.clear()
    METHODS.update(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def demo_format(image_size: int = 32, num_image_tokens: int = 4):
    """The LLaVA conversation format of a tiny demo model (demo tokenizer): what a model would give the data module."""
    from rode_lightning.data.tokenizer import load_tokenizer
    from rode_lightning.model.formats import LlavaFormat

    return LlavaFormat(load_tokenizer("demo"), image_size, num_image_tokens)


TINY_DEMO_SOURCES = ("[{dataset: unifood, demo_sizes: {train: 16, val: 4, test: 4}}, "
                     "{dataset: nutrition5k, demo_sizes: {train: 32, test: 8}}]")
"""The demo's two datasets, small: Uni-Food 16/4/4 dishes, Nutrition5k 32 train and 8 test dishes."""


def tiny_cli_args(demo_dir: Path, log_dir: Path, *extra: str) -> list[str]:
    """Arguments for a CLI run of a few steps on the tiny demo configuration."""
    return [
        "--config", str(Path(__file__).parents[1] / "configs" / "demo.yaml"),
        "--data.demo_dir", str(demo_dir),
        "--data.sources", TINY_DEMO_SOURCES,
        "--data.batch_size", "4", "--data.eval_batch_size", "4",
        "--trainer.logger.init_args.save_dir", str(log_dir),
        "--trainer.enable_progress_bar", "false",
        "--model.max_new_tokens", "4",
        # A tiny random model of the demo's shape: the tests that need the pre-trained base build a tiny one
        # (tests/pretrain), the others need no pre-training.
        "--model.vision.checkpoint", "null", "--model.language.path", "null", "--model.tokenizer", "demo",
        *extra,
    ]


def printed_results(output: str, stage: str = "val") -> dict[str, float]:
    """The last ``<stage>`` evaluation a CLI run printed, as ``{"<stage>/<dataset>/<metric>": value}`` (floors
    included) plus ``"<stage>/loss"``, read from the results JSON whose path the run printed."""
    import json

    marker = f"{stage} results written to "
    path = Path([line for line in output.splitlines() if line.startswith(marker)][-1][len(marker):].strip())
    saved = json.loads(path.with_suffix(".json").read_text())
    values = {f"{stage}/loss": saved["loss"]}
    for table in (saved["results"], saved["floors"]):
        for dataset, row in table.items():
            values.update({f"{stage}/{dataset}/{name}": value for name, value in row.items()})
    return values
