"""Building the demo base once, into the demo cache, complete or not at all.

``build_demo_base`` runs the three stages (CLIP, LLaMA, LLaVA stage 1) and writes the base into
``<demo dir>/base``: first into a temporary folder beside it, then renamed into place, so an interrupted build
leaves no half-written base (the next run builds it again). A file lock lets the processes of a distributed run
wait for one build. ``build.json`` records the recipe, each stage's final loss and time, and the library versions;
a base of another recipe is rebuilt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from rode_lightning.atomic import write_json_atomically
from rode_lightning.data.demo_text import food_text
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.model.vision import VisionConfig, VisionEncoder
from rode_lightning.pretrain.alignment import align_projector
from rode_lightning.pretrain.clip import train_clip
from rode_lightning.pretrain.language import train_language_model
from rode_lightning.pretrain.layout import (LLAVA_DIRECTORY, VISION_CHECKPOINT, write_llava_directory,
                                            write_open_clip_checkpoint)
from rode_lightning.pretrain.leakage import check_texts
from rode_lightning.pretrain.plates import draw_plates
from rode_lightning.pretrain.recipe import BaseRecipe
from rode_lightning.provenance import library_versions

log = logging.getLogger(__name__)

DEMO_BASE = "demo-base"
"""The value of ``model.vision.checkpoint``, ``model.language.path`` and ``model.tokenizer`` that names the demo
base's files in the demo cache; the CLI resolves it (building the base on first use)."""

TEXT_STREAM = 104729
BUILD_RECORD = "build.json"


@dataclass(frozen=True)
class DemoBase:
    """Where a built demo base's files are: give them to ``model.vision.checkpoint``, ``model.language.path`` and
    ``model.tokenizer`` (``configs/demo.yaml`` says ``demo-base`` for all three, which the CLI resolves to these)."""

    root: Path

    @property
    def vision_checkpoint(self) -> Path:
        return self.root / VISION_CHECKPOINT

    @property
    def llava(self) -> Path:
        return self.root / LLAVA_DIRECTORY

    @property
    def record(self) -> Path:
        return self.root / BUILD_RECORD

    def built_with(self, recipe: BaseRecipe) -> bool:
        if not self.record.is_file():
            return False
        try:
            return json.loads(self.record.read_text()).get("recipe") == recipe.as_dict()
        except json.JSONDecodeError:
            return False


def vision_config(recipe: BaseRecipe, checkpoint: str | None = None) -> VisionConfig:
    return VisionConfig(image_size=recipe.vision_image_size, patch_size=recipe.vision_patch_size,
                        width=recipe.vision_width, layers=recipe.vision_layers, head_width=recipe.vision_head_width,
                        checkpoint=checkpoint)


def build_demo_base(root: str | Path, recipe: BaseRecipe = BaseRecipe(), force: bool = False) -> DemoBase:
    """The demo base under ``root``, built unless ``root`` already holds one of this recipe."""
    base = DemoBase(Path(root).expanduser())
    base.root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base.root) + ".lock"):
        if base.built_with(recipe) and not force:
            return base
        log.warning("building the demo base (CLIP, LLaMA, LLaVA stage 1) into %s; once, about 3 minutes", base.root)
        partial = base.root.with_name(base.root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            # The build seeds torch itself; the caller's random state (a run seeded by seed_everything, which then
            # builds its model) must not depend on whether the base was cached.
            with random_state_kept():
                record = _build(DemoBase(partial), recipe)
        except BaseException:  # Ctrl-C included: no half-built base stays behind
            shutil.rmtree(partial, ignore_errors=True)
            raise
        # A valid base is renamed into place whole; the old one (another recipe) is removed only after.
        stale = base.root.with_name(base.root.name + ".stale")
        shutil.rmtree(stale, ignore_errors=True)
        if base.root.exists():
            base.root.rename(stale)
        partial.rename(base.root)
        shutil.rmtree(stale, ignore_errors=True)
        log.warning("demo base built in %.0f s: %s", record["seconds"]["total"], base.root)
        return base


@contextlib.contextmanager
def random_state_kept():
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def _build(base: DemoBase, recipe: BaseRecipe) -> dict:
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    losses: dict[str, float] = {}
    tokenizer = load_tokenizer("demo")
    plates = draw_plates(recipe.plates, recipe.seed, recipe.image_size, recipe.vision_image_size)
    texts = food_text(np.random.default_rng([recipe.seed, TEXT_STREAM]), recipe.texts)
    check_texts(plates.captions, "caption")
    check_texts(texts, "pre-training text")
    seconds["data"] = time.perf_counter() - start

    mark = time.perf_counter()
    clip, losses["clip_contrastive"] = train_clip(recipe, plates)
    write_open_clip_checkpoint(clip, base.vision_checkpoint)
    seconds["clip"] = time.perf_counter() - mark
    del clip

    mark = time.perf_counter()
    language_model, losses["language_model"] = train_language_model(recipe, texts, tokenizer)
    seconds["language_model"] = time.perf_counter() - mark

    mark = time.perf_counter()
    # The tower as fine-tuning will see it: read back from the checkpoint just written, by the real loader.
    tower = VisionEncoder(vision_config(recipe, str(base.vision_checkpoint)))
    projector, losses["alignment_caption"] = align_projector(recipe, tower, language_model, tokenizer, plates)
    write_llava_directory(language_model, projector, tokenizer, recipe.vision_width, base.llava,
                          vision_tower=f"../{VISION_CHECKPOINT}")
    seconds["alignment"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - start
    record = {"recipe": recipe.as_dict(), "final_losses": losses, "seconds": seconds,
              "torch_threads": torch.get_num_threads(), "versions": library_versions()}
    write_json_atomically(base.record, record, indent=2)
    return record
