"""The pictures the demo base is pre-trained on: fresh plates with their captions, never a demo split's image."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import open_clip
import torch

from rode_lightning.data.dishes import draw_dish, sample_dish
from rode_lightning.data.demo_text import caption
from rode_lightning.progress import progress

PLATE_STREAM = 7919
"""The demo splits draw from ``default_rng(seed)``; pre-training plates from ``default_rng([seed, PLATE_STREAM])``,
an independent stream, so no pre-training picture is a picture of the splits (checked pixel for pixel in the
tests)."""


@dataclass
class Plates:
    images: torch.Tensor  # (n, 3, H, W), open_clip's evaluation transform applied
    captions: list[str]
    digests: list[str]  # SHA-256 of each drawn picture's RGB bytes, for the leakage check


def image_digest(image) -> str:
    """SHA-256 of a PIL image's RGB pixels (not of its file, so PNG encoding does not matter)."""
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def draw_plates(count: int, seed: int, image_size: int, vision_image_size: int) -> Plates:
    rng = np.random.default_rng([seed, PLATE_STREAM])
    transform = open_clip.image_transform(vision_image_size, is_train=False)
    images, captions, digests = [], [], []
    for _ in progress(range(count), "drawing pre-training plates", "plate"):
        _, ingredients = sample_dish(rng)
        picture = draw_dish(ingredients, rng, image_size)
        images.append(transform(picture))
        captions.append(caption(ingredients))
        digests.append(image_digest(picture))
    return Plates(torch.stack(images), captions, digests)
