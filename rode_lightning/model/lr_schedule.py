"""The learning-rate schedule of fine-tuning and of the demo base's pre-training: linear warm-up, then cosine decay
to zero.

It is transformers' ``get_cosine_schedule_with_warmup`` (the same ``LambdaLR`` and the same factors; a test compares
them step by step), written here because importing it costs every command about three seconds: transformers'
optimization module imports its Trainer's utilities, which import peft, and peft imports bitsandbytes and torchao
wherever they are installed (the ``[quantization]`` extra).
"""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _factor(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def warmup_cosine(optimizer: Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """``optimizer``'s learning rates times ``step / warmup_steps`` during warm-up, then half a cosine down to 0 at
    ``total_steps``."""
    return LambdaLR(optimizer, partial(_factor, warmup_steps=warmup_steps, total_steps=total_steps))
