"""The storage dtypes a frozen part of the model can be kept in, by the names configs use."""

from __future__ import annotations

from typing import Literal

import torch

from rode_lightning.user_errors import UserError

DtypeName = Literal["fp32", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_dtype(field: str, value: str) -> None:
    if value not in DTYPES:
        raise UserError(f"{field}: {value!r}; expected one of {sorted(DTYPES)}")
