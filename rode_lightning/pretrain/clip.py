"""Stage 0a: a tiny open_clip CLIP, trained contrastively on plates and their captions (open_clip's ``ClipLoss``).

The captions say which items are on the plate and how large each portion is, so the tower's features come to
carry what and how much, as a real CLIP's carry what a web caption says about a photo. Only the vision tower is
used downstream (its penultimate block, as LLaVA uses ViT-L/14-336); the whole CLIP is saved, as open_clip releases
are.
"""

from __future__ import annotations

import torch
from open_clip.loss import ClipLoss
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer

from rode_lightning.pretrain.plates import Plates
from rode_lightning.pretrain.recipe import BaseRecipe
from rode_lightning.pretrain.schedule import train


def build_clip(recipe: BaseRecipe) -> CLIP:
    vision = CLIPVisionCfg(layers=recipe.vision_layers, width=recipe.vision_width,
                           head_width=recipe.vision_head_width, image_size=recipe.vision_image_size,
                           patch_size=recipe.vision_patch_size)
    text = CLIPTextCfg(context_length=recipe.text_context_length, width=recipe.text_width,
                       heads=recipe.text_heads, layers=recipe.text_layers)
    # embed_dim = the tower width: what model/vision.py builds for a tower without a preset.
    return CLIP(embed_dim=recipe.vision_width, vision_cfg=vision, text_cfg=text, quick_gelu=True)


def train_clip(recipe: BaseRecipe, plates: Plates) -> tuple[CLIP, float]:
    """The trained CLIP and its final contrastive loss."""
    torch.manual_seed(recipe.seed)
    model = build_clip(recipe)
    # open_clip's own BPE (its vocabulary ships with the package: nothing is downloaded).
    tokens = SimpleTokenizer(context_length=recipe.text_context_length)(plates.captions)
    loss = ClipLoss()

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        image_features, text_features, logit_scale = model(plates.images[batch], tokens[batch])
        return loss(image_features, text_features, logit_scale)

    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    final = train(parameters, recipe.clip, len(tokens), recipe.seed, loss_of, "pre-training the demo CLIP")
    return model.eval(), final
