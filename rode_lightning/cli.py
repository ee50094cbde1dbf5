"""Command line: ``python -m rode_lightning fit|validate|test|predict --config CONFIG.yaml``.

LightningCLI builds the model and data module from the YAML (every constructor argument is a documented key;
``--print_config`` shows them all). The tokenizer and the vision encoder's input shape are set once, on the model,
and linked into the data module so the two can never disagree.
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from rode_lightning.callbacks.prediction_writer import JSONLPredictionWriter
from rode_lightning.data.datamodule import FoodDataModule
from rode_lightning.model.module import FoodLMMModule
from rode_lightning.model.vision import VisionConfig


class RoDECLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.tokenizer", "data.tokenizer", apply_on="parse")
        # Module-level functions, not lambdas: the parser travels with the trainer to spawned DDP processes.
        parser.link_arguments("model.vision", "data.image_size", compute_fn=_image_size, apply_on="parse")
        parser.link_arguments("model.vision", "data.num_image_tokens", compute_fn=_num_patches, apply_on="parse")
        parser.link_arguments("model.adapter", "data.num_clusters", compute_fn=_clusters_needed, apply_on="parse")
        # Always present, so `predict` writes its answers without extra configuration (`--predictions.output_path`).
        parser.add_lightning_class_args(JSONLPredictionWriter, "predictions")


def _image_size(vision) -> int:
    return _vision_config(vision).image_size


def _num_patches(vision) -> int:
    return _vision_config(vision).num_patches


def _clusters_needed(adapter) -> int | None:
    """The data side clusters instructions only for MoCLE routing."""
    method = adapter.method if hasattr(adapter, "method") else adapter["method"]
    number = adapter.num_clusters if hasattr(adapter, "num_clusters") else adapter["num_clusters"]
    return number if method == "cluster" else None


def _vision_config(value) -> VisionConfig:
    """The parsed ``model.vision`` (a namespace at link time) as a validated config, presets resolved."""
    if isinstance(value, VisionConfig):
        return value
    return VisionConfig(**(value.as_dict() if hasattr(value, "as_dict") else dict(value)))


def main(args: list[str] | None = None, run: bool = True) -> RoDECLI:
    """Parse ``args`` (default: the command line) and run the subcommand; with ``run=False`` there is no subcommand,
    and the CLI only builds the trainer, model and data module from the arguments, for a script to drive."""
    return RoDECLI(FoodLMMModule, FoodDataModule, args=args, run=run, save_config_kwargs={"overwrite": True},
                   auto_configure_optimizers=False, parser_kwargs={"parser_mode": "omegaconf"})
