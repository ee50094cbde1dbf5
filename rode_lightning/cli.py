"""Command line: ``python -m rode_lightning fit|validate|test|predict --config CONFIG.yaml``.

LightningCLI builds the model and data module from the YAML (every constructor argument is a documented key;
``--print_config`` shows them all). The tokenizer and the vision encoder's input shape are set once, on the model,
and linked into the data module so the two can never disagree.
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from rode_lightning.callbacks.prediction_writer import JSONLPredictionWriter
from rode_lightning.data.datamodule import FoodDataModule, default_demo_dir
from rode_lightning.model.module import FoodLMMModule
from rode_lightning.model.vision import VisionConfig
from rode_lightning.pretrain.build import DEMO_BASE


class RoDECLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.tokenizer", "data.tokenizer", apply_on="parse")
        # Module-level functions, not lambdas: the parser travels with the trainer to spawned DDP processes.
        parser.link_arguments("model.vision", "data.image_size", compute_fn=_image_size, apply_on="parse")
        parser.link_arguments("model.vision", "data.num_image_tokens", compute_fn=_num_patches, apply_on="parse")
        parser.link_arguments("model.adapter", "data.num_clusters", compute_fn=_clusters_needed, apply_on="parse")
        # Always present, so `predict` writes its answers without extra configuration (`--predictions.output_path`).
        parser.add_lightning_class_args(JSONLPredictionWriter, "predictions")

    def before_instantiate_classes(self) -> None:
        resolve_demo_base(self.config[self.subcommand] if self.subcommand else self.config)


def resolve_demo_base(config) -> None:
    """Replace every ``demo-base`` value by the base's real path, building the base first if it is not there.
    What the model then loads is an open_clip checkpoint and a LLaVA v1.5 directory, by the code that loads
    CLIP ViT-L and LLaVA-7B."""
    keys = ("model.vision.checkpoint", "model.language.path", "model.tokenizer", "data.tokenizer")
    wanted = [key for key in keys if config.get(key) == DEMO_BASE]
    if not wanted:
        return
    from rode_lightning import pretrain

    demo_dir = config.get("data.demo_dir") or default_demo_dir()
    base = pretrain.build_demo_base(f"{demo_dir}/base")
    paths = {"model.vision.checkpoint": base.vision_checkpoint, "model.language.path": base.llava,
             "model.tokenizer": base.llava, "data.tokenizer": base.llava}
    for key in wanted:
        config[key] = str(paths[key])


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
