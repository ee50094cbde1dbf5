"""What the demo base is: the shapes of its three parts and how long each pre-training stage runs.

The shapes are those of ``configs/demo.yaml``'s ``model.vision`` (the tower's checkpoint must fit the tower built
from them) and the language model's ``config.json``. A recipe is written into the base's ``build.json``; a base
built from another recipe is rebuilt, as the demo data is regenerated when its parameters change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class StageSchedule:
    """One pre-training stage: AdamW for ``steps`` steps of ``batch_size``, linear warm-up then cosine decay."""

    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.0
    warmup_steps: int = 50


@dataclass(frozen=True)
class BaseRecipe:
    """The demo base: a CLIP, a LLaMA and a projector, pre-trained from ``seed`` on plates and text of their own.

    Attributes:
        seed: seeds the pre-training plates, the texts and every stage's initialisation and batch order.
        plates: pictures drawn for pre-training (fresh draws, never an image of the demo splits).
        image_size: side of the drawn plates in pixels (the demo datasets' size); the tower sees them resized to
            ``vision_image_size`` by open_clip's transform, as fine-tuning does.
        texts: generic food texts for the language model.
        clip: contrastive pre-training of the tower against plate captions (open_clip's ``ClipLoss``).
        language: causal language modelling of the LLaMA on the food texts.
        alignment: LLaVA's stage 1: the projector alone, on captions, tower and LLaMA frozen.
    """

    seed: int = 0
    plates: int = 4000
    image_size: int = 96
    texts: int = 12000
    vision_image_size: int = 64
    vision_patch_size: int = 16
    vision_width: int = 128
    vision_layers: int = 3
    vision_head_width: int = 32
    text_context_length: int = 40
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    hidden_size: int = 128
    intermediate_size: int = 256
    layers: int = 2
    heads: int = 4
    max_position_embeddings: int = 512
    text_block_length: int = 128
    clip: StageSchedule = StageSchedule(steps=320, batch_size=128, learning_rate=1e-3, weight_decay=0.1,
                                        warmup_steps=30)
    language: StageSchedule = StageSchedule(steps=400, batch_size=32, learning_rate=2e-3, warmup_steps=30)
    alignment: StageSchedule = StageSchedule(steps=500, batch_size=32, learning_rate=2e-3, warmup_steps=30)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def scaled(self, fraction: float) -> "BaseRecipe":
        """The same recipe with every stage's steps (and the data) scaled down, for tests."""
        def stage(schedule: StageSchedule) -> StageSchedule:
            steps = max(2, int(schedule.steps * fraction))
            return dataclasses.replace(schedule, steps=steps, warmup_steps=min(schedule.warmup_steps, steps // 2))
        return dataclasses.replace(self, plates=max(64, int(self.plates * fraction)),
                                   texts=max(64, int(self.texts * fraction)), clip=stage(self.clip),
                                   language=stage(self.language), alignment=stage(self.alignment))
