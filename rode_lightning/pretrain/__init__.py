"""The demo base: a tiny LLaVA pre-trained offline the way LLaVA is built (CLIP, LLaMA, projector alignment), so
that the demo fine-tunes adapters on a base that knows food, as real users do with LLaVA-7B."""

from rode_lightning.pretrain.build import DemoBase, build_demo_base
from rode_lightning.pretrain.recipe import BaseRecipe

__all__ = ["BaseRecipe", "DemoBase", "build_demo_base"]
