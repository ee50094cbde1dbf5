"""The vision encoder: an open_clip Vision Transformer that returns patch tokens of its penultimate block.

LLaVA feeds the language model the patch tokens (no CLS token) of the second-to-last transformer block of CLIP,
because the last block is shaped by the contrastive objective and carries less local detail. We build the tower
through open_clip's own ``CLIPVisionCfg`` and ``_build_vision_tower``, so that a real ``ViT-L-14-336`` checkpoint
loads into exactly the module open_clip would build (``model.vision.checkpoint``, read by ``model/open_clip_weights.py``), and
a tiny configuration builds the same code at demo size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rode_lightning.compat import build_open_clip_vision_tower
from rode_lightning.model.dtypes import DTYPES, DtypeName, check_dtype
from rode_lightning.user_errors import UserError


@dataclass
class VisionConfig:
    """Vision tower shape. ``preset`` (an open_clip model name such as ``ViT-L-14-336``) overrides the sizes.

    Args:
        preset: open_clip model name whose ``vision_cfg`` is used; ``null`` for the explicit sizes below.
        image_size: input side in pixels.
        patch_size: patch side in pixels; the encoder yields ``(image_size / patch_size)^2`` tokens.
        width: token width.
        layers: transformer blocks (at least 2: the penultimate block's output is used).
        head_width: width per attention head.
        checkpoint: local open_clip checkpoint to load, or ``null`` for random weights (demo and tests): open_clip's
            ``open_clip_pytorch_model.bin`` / ``open_clip_model.safetensors`` (or any ``torch.save`` state dict with
            ``visual.*`` tensors) or OpenAI's TorchScript ``ViT-L-14-336px.pt``. Only the ``visual.*`` tensors are
            read; each must fit the tower built from ``preset`` or the sizes (shape errors name the tensor).
        quick_gelu: use QuickGELU (``x * sigmoid(1.702 x)``) in the MLPs, as OpenAI's CLIP was trained, and LLaVA's
            tower is OpenAI's ViT-L/14-336 (open_clip applies it for the ``openai`` weights of ``ViT-L-14-336``
            although the model config does not say so). ``false`` for towers trained with ``nn.GELU`` (most
            LAION/DataComp checkpoints). The activation has no weights: a wrong value loads fine but gives other
            features.
        dtype: ``fp32``, ``bf16`` or ``fp16``: the dtype the frozen tower is stored and run in. ViT-L/14-336 takes
            1.2 GB in fp32 and 0.6 GB in bf16; LLaVA runs it in half precision. Its patch tokens are handed to the
            projector in the projector's dtype.
    """

    preset: str | None = None
    image_size: int = 64
    patch_size: int = 8
    width: int = 128
    layers: int = 3
    head_width: int = 32
    checkpoint: str | None = None
    quick_gelu: bool = True
    dtype: DtypeName = "fp32"

    def __post_init__(self) -> None:
        check_dtype("model.vision.dtype", self.dtype)
        if self.preset is not None:
            import open_clip

            model_config = open_clip.get_model_config(self.preset)
            if model_config is None:
                raise UserError(f"model.vision.preset: {self.preset!r} is not an open_clip model name")
            vision = model_config["vision_cfg"]
            self.image_size, self.patch_size = int(vision["image_size"]), int(vision["patch_size"])
            self.width, self.layers = int(vision["width"]), int(vision["layers"])
            self.head_width = int(vision.get("head_width", 64))
        if self.image_size % self.patch_size:
            raise UserError(f"model.vision: image_size {self.image_size} is not a multiple of "
                            f"patch_size {self.patch_size}")
        if self.layers < 2:
            raise UserError(f"model.vision.layers: {self.layers}; at least 2 are needed (the penultimate block's "
                            "output feeds the projector)")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class VisionEncoder(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        from open_clip.model import CLIPVisionCfg

        self.config = config
        vision_cfg = CLIPVisionCfg(layers=config.layers, width=config.width, head_width=config.head_width,
                                   image_size=config.image_size, patch_size=config.patch_size)
        # embed_dim is the size of CLIP's pooled projection (``visual.proj``), which LLaVA does not use; a preset's
        # own value lets its checkpoint load whole (ViT-L-14-336: 768).
        embed_dim = config.width
        if config.preset is not None:
            import open_clip

            embed_dim = int(open_clip.get_model_config(config.preset)["embed_dim"])
        self.tower = build_open_clip_vision_tower(embed_dim, vision_cfg, config.quick_gelu)
        if config.checkpoint is not None:
            from rode_lightning.model.open_clip_weights import load_open_clip_visual

            load_open_clip_visual(self.tower, config.checkpoint)
        # Every tensor in one dtype (one FSDP unit needs that); the LayerNorms then run in it too, or in fp32 under
        # autocast, which computes layer_norm in fp32.
        self.tower.to(DTYPES[config.dtype])

    @property
    def output_dim(self) -> int:
        return self.config.width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(batch, 3, H, W)`` images to ``(batch, num_patches, width)`` penultimate-block patch tokens, in the
        tower's dtype (``config.dtype``, or whatever a later ``.to()`` made it, e.g. Lightning's ``bf16-true``)."""
        output = self.tower.forward_intermediates(images.to(self.tower.conv1.weight.dtype),
                                                  indices=[self.config.layers - 2], stop_early=True,
                                                  intermediates_only=True, output_fmt="NLC")
        return output["image_intermediates"][0]
