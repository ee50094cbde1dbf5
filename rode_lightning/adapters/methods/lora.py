"""Plain LoRA through ``peft``'s own layers, so that the baseline is the implementation users already trust."""

from __future__ import annotations

from torch import nn

from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.methods.base import AdapterMethod, AdapterSettings
from rode_lightning.user_errors import UserError


class LoRA(AdapterMethod):
    name = "lora"
    summary = "one plain LoRA of rank ranks[0] (peft), no router"
    routes_tokens = False
    is_one_lora = True

    def validate(self, config: AdapterSettings) -> None:
        super().validate(config)
        if len(config.ranks) != 1:
            raise UserError(f"adapter.ranks: method 'lora' takes exactly one rank, got {config.ranks}")

    def inject(self, model: nn.Module, names: list[str], config: AdapterSettings, context: RoutingContext,
               cluster_dim: int | None) -> None:
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.tuners_utils import cast_adapter_dtype

        lora = LoraConfig(r=config.ranks[0], lora_alpha=config.alpha, lora_dropout=config.dropout,
                          target_modules=names, bias="none")
        inject_adapter_in_model(lora, model)
        # As peft's get_peft_model does: fp32 LoRA matrices over a bf16/fp16 base (as the mixtures have).
        cast_adapter_dtype(model, "default", autocast_adapter_dtype=True)

    def activation_bytes(self, config: AdapterSettings, in_features: int) -> tuple[bool, float]:
        """peft casts its input to its fp32 weights and autocast casts that back to bf16 for the matmul, so each
        LoRA layer keeps its own ``2 D`` copy, dropout or not (plus the mask, ``D``, with dropout), and the rank-``r``
        activation, ``2 r``."""
        dropout = in_features if config.dropout > 0 else 0
        return False, float(2 * in_features + dropout + 2 * config.ranks[0])
