"""The frozen base in 8 or 4 bits (``model.quantization``), as QLoRA trains: the adapters stay in fp32 on top.

Two libraries do the work, each the way it is meant to be used:

* ``torchao`` (the default; ``pip install -e ".[quantization]"`` installs the tested release): weight-only int8
  (``Int8WeightOnlyConfig``, runs on the CPU and CUDA) and int4 (``Int4WeightOnlyConfig``, packed 4-bit with a bf16
  scale and zero point per group of ``group_size`` weights; its kernels need a CUDA GPU).
* ``bitsandbytes``: LLM.int8 (``Linear8bitLt``) and NF4 with double quantisation (``Linear4bit``, QLoRA's format);
  both run on the CPU too (bitsandbytes' CPU backend).

A transformers base is quantized while it loads, through transformers' own quantization config (``TorchAoConfig``,
``BitsAndBytesConfig``: :func:`transformers_quantization_config`), so a 7B model never sits in memory unquantized. The
LLaVA-1.5 base is this package's own model: its LLaMA (and, with ``vision``, the CLIP tower) is quantized after loading
(:func:`quantize_linear_layers`). Either way only ``nn.Linear`` weights of the frozen parts are quantized; embeddings,
norms, the output layer (``lm_head``), the projector / connector and the adapters keep their dtype.

The adapter layers wrap the quantized modules and call their own forward: nothing in this package reads a quantized
``.weight``'s values. Plain ``lora`` is peft's LoRA layer around the quantized one (peft's torchao variant over
torchao weights; its plain layer over bitsandbytes ones, since the module it adapts carries no ``is_loaded_in_8bit``
flag), calling its forward the same way. Merging a LoRA into quantized weights would round it away, so ``merge``
refuses a quantized base.

:func:`linear_storage_bytes` is the bytes one quantized ``out x in`` weight takes, the estimate's model of it;
:func:`stored_bytes` measures what a built module really holds, and a test keeps the two equal.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from rode_lightning.user_errors import UserError

LIBRARIES = ("torchao", "bitsandbytes")
BITS = (8, 4)
NF4_BLOCK = 64
"""bitsandbytes' NF4 block: one absmax per 64 weights, itself quantized to 8 bits in blocks of 256 (double
quantisation) with one fp32 absmax per such block and one fp32 offset."""
NF4_NESTED_BLOCK = 256
INSTALL = 'pip install -e ".[quantization]"'


@dataclass
class QuantizationConfig:
    """The frozen base's weights in fewer bits.

    Args:
        bits: ``8`` or ``4``; ``null`` (the default): no quantization, the frozen model in its ``dtype``.
        library: ``torchao`` (int8 weight-only on the CPU and CUDA; int4 on CUDA only) or ``bitsandbytes`` (LLM.int8
            and NF4, CPU and CUDA).
        vision: quantize the vision tower's linear layers too (default: the language model only; a vision tower is
            small next to it and more sensitive to rounding).
        group_size: ``torchao`` 4-bit only: weights sharing one scale and zero point (32, 64, 128 or 256).
    """

    bits: int | None = None
    library: Literal["torchao", "bitsandbytes"] = "torchao"
    vision: bool = False
    group_size: int = 128

    def __post_init__(self) -> None:
        if self.bits is not None and self.bits not in BITS:
            raise UserError(f"model.quantization.bits: {self.bits!r}; expected 8, 4 or null (no quantization)")
        if self.library not in LIBRARIES:
            raise UserError(f"model.quantization.library: {self.library!r}; expected one of {', '.join(LIBRARIES)}")
        if self.group_size not in (32, 64, 128, 256):
            raise UserError(f"model.quantization.group_size: {self.group_size!r}; expected 32, 64, 128 or 256")

    @property
    def enabled(self) -> bool:
        return self.bits is not None

    def describe(self) -> str:
        scheme = {("torchao", 8): "int8 weight-only", ("torchao", 4): f"int4 weight-only, groups of {self.group_size}",
                  ("bitsandbytes", 8): "LLM.int8", ("bitsandbytes", 4): "NF4, double-quantized"}
        parts = "language model and vision tower" if self.vision else "language model"
        return f"{self.bits}-bit {self.library} ({scheme[self.library, self.bits]}) {parts}"


def check_runs_here(config: QuantizationConfig, cuda: bool | None = None,
                    dtypes: dict[str, torch.dtype] | None = None) -> None:
    """Refuse, before anything loads, what cannot run here: a library that is not installed, torchao's 4-bit weights
    without a CUDA GPU (torchao ships their kernels for CUDA only; bitsandbytes' NF4 runs on the CPU) or over a
    frozen part not in bf16 (``dtypes``: the config key of each part quantized, and its dtype; the int4 kernels take
    bf16 only)."""
    if not config.enabled:
        return
    import importlib.util

    if importlib.util.find_spec(config.library) is None:
        raise UserError(f"model.quantization.library: {config.library} is not installed; {INSTALL} installs the "
                        "tested releases")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if config.library == "torchao" and config.bits == 4 and not cuda:
        raise UserError("model.quantization: torchao's 4-bit weights need a CUDA GPU (its int4 kernels are CUDA "
                        "only); on the CPU use library: bitsandbytes (NF4) or bits: 8")
    if config.library == "torchao" and config.bits == 4:
        for key, dtype in (dtypes or {}).items():
            if dtype != torch.bfloat16:
                raise UserError(f"model.quantization: torchao's 4-bit weights compute in bf16, and {key} is "
                                f"{str(dtype).removeprefix('torch.')}; set {key}: bf16 (or use library: "
                                "bitsandbytes)")


def _torchao_config(config: QuantizationConfig):
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig

    if config.bits == 8:
        return Int8WeightOnlyConfig()
    # torch's own int4 kernels (tile-packed, bf16): the default packing needs torchao's separate mslk kernels.
    return Int4WeightOnlyConfig(group_size=config.group_size, int4_packing_format="tile_packed_to_4d")


def transformers_quantization_config(config: QuantizationConfig, skipped: list[str], dtype: torch.dtype):
    """transformers' quantization config for ``from_pretrained``; ``skipped``: module names kept unquantized (the
    vision tower unless ``vision``, the connector, the output layer), matched as transformers matches them (a name
    prefix on module boundaries)."""
    quiet_libraries()
    if config.library == "torchao":
        from transformers import TorchAoConfig

        return TorchAoConfig(_torchao_config(config), modules_to_not_convert=skipped)
    from transformers import BitsAndBytesConfig

    if config.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skipped)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=skipped)


def quantize_linear_layers(module: nn.Module, config: QuantizationConfig,
                           keep: Callable[[str], bool] = lambda name: False) -> int:
    """Quantize every ``nn.Linear`` of ``module`` in place but those whose name ``keep`` accepts; return how many.

    torchao: its ``quantize_`` with the layer filter. bitsandbytes: each layer replaced by ``Linear8bitLt`` /
    ``Linear4bit`` holding its weights; bitsandbytes quantizes them when the layer is moved to its device (done
    here, on the layer's device)."""
    names = quantizable_linear_names(module, keep)
    quiet_libraries()
    if config.library == "torchao":
        from torchao.quantization import quantize_

        chosen = set(names)
        quantize_(module, _torchao_config(config), filter_fn=lambda child, name: name in chosen)
        return len(names)
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child_name, _bitsandbytes_linear(getattr(parent, child_name), config.bits))
    return len(names)


def quantizable_linear_names(module: nn.Module, keep: Callable[[str], bool] = lambda name: False) -> list[str]:
    """The ``nn.Linear`` layers of ``module`` that :func:`quantize_linear_layers` quantizes (the estimate counts the
    same ones): all but those ``keep`` accepts and the output projection of ``nn.MultiheadAttention`` (CLIP's
    attention), whose weight its parent reads directly instead of calling it."""
    inside_attention = {id(child) for parent in module.modules() if isinstance(parent, nn.MultiheadAttention)
                        for child in parent.children()}
    return [name for name, child in module.named_modules()
            if isinstance(child, nn.Linear) and id(child) not in inside_attention and not keep(name)]


def _bitsandbytes_linear(linear: nn.Linear, bits: int) -> nn.Module:
    import bitsandbytes as bnb

    weight = linear.weight.detach()
    device, has_bias = weight.device, linear.bias is not None
    if bits == 8:
        quantized = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                        has_fp16_weights=False, device="meta")
        quantized.weight = bnb.nn.Int8Params(weight.cpu(), requires_grad=False, has_fp16_weights=False)
    else:
        quantized = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                      compute_dtype=weight.dtype, quant_type="nf4", compress_statistics=True,
                                      device="meta")
        quantized.weight = bnb.nn.Params4bit(weight.cpu(), requires_grad=False, quant_type="nf4",
                                             compress_statistics=True)
    if has_bias:
        quantized.bias = nn.Parameter(linear.bias.detach().cpu(), requires_grad=False)
    return quantized.to(device)  # bitsandbytes quantizes on this move


def _without_cast_message(record: logging.LogRecord) -> bool:
    return "inputs will be cast from" not in record.getMessage()


def quiet_libraries() -> None:
    """Two messages that would repeat on every run, said once in README.md instead: LLM.int8 logs on every forward of
    an fp32 or bf16 input that it computes in fp16 (its design), and peft warns that a LoRA over a torchao layer it did
    not load cannot be merged (``merge`` refuses a quantized base anyway)."""
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if _without_cast_message not in logger.filters:
        logger.addFilter(_without_cast_message)
    warnings.filterwarnings("ignore", message=".*was instantiated without `get_apply_tensor_subclass`")


def is_quantized(module: nn.Module) -> bool:
    """Whether ``module`` holds a quantized weight (a torchao tensor subclass or a bitsandbytes parameter)."""
    weight = getattr(module, "weight", None)
    if weight is None or not isinstance(weight, torch.Tensor):
        return False
    return type(weight).__module__.startswith(("torchao", "bitsandbytes"))


def has_quantized_weights(model: nn.Module) -> bool:
    return any(is_quantized(module) for module in model.modules())


def linear_storage_bytes(config: QuantizationConfig, out_features: int, in_features: int) -> int:
    """Bytes that one ``out_features x in_features`` weight takes once quantized by ``config``, whatever the base's
    floating dtype (no format keeps a scale in it). The formats: torchao int8, an int8 per weight and per output row
    an fp32 scale and an int8 zero point; torchao int4, half a byte per weight and a bf16 scale and zero point per group
    (torchao's documented layout; not measurable without CUDA); LLM.int8, an int8 per weight and an fp32 scale per
    row; NF4, half a byte per weight, an 8-bit absmax per 64 and an fp32 absmax per 256 of those, plus
    the two codebooks (16 and 256 fp32 values) and an fp32 offset. Compared with built layers in
    tests/model/test_quantization.py (the CUDA-only int4 excepted)."""
    weights = out_features * in_features
    if config.library == "torchao" and config.bits == 8:
        return weights + out_features * (4 + 1)
    if config.library == "torchao":
        return weights // 2 + 2 * 2 * out_features * math.ceil(in_features / config.group_size)
    if config.bits == 8:
        return weights + out_features * 4
    blocks = math.ceil(weights / NF4_BLOCK)
    return math.ceil(weights / 2) + blocks + 4 * math.ceil(blocks / NF4_NESTED_BLOCK) + 4 * (16 + 256) + 4


def stored_bytes(module: nn.Module) -> int:
    """The bytes ``module``'s parameters really hold (buffers, such as rotary tables, are not weights and the estimate
    leaves them out too), a quantized weight counted by its parts (torchao's inner tensors; bitsandbytes' codes with
    their scales and statistics); a tensor shared by several modules once."""
    seen: set[int] = set()
    total = 0
    for tensor in module.parameters():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += _tensor_bytes(tensor)
    return total


def _tensor_bytes(tensor: torch.Tensor) -> int:
    if hasattr(tensor, "__tensor_flatten__"):  # a torchao tensor subclass: the sum of its inner tensors
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in names)
    total = tensor.numel() * tensor.element_size()
    scale = getattr(tensor, "SCB", None)  # LLM.int8's per-row scales
    if isinstance(scale, torch.Tensor):
        total += scale.numel() * scale.element_size()
    state = getattr(tensor, "quant_state", None)  # NF4's statistics (and the nested ones of double quantisation)
    while state is not None:
        for part in (state.absmax, state.code, getattr(state, "offset", None)):
            if isinstance(part, torch.Tensor):
                total += part.numel() * part.element_size()
        state = getattr(state, "state2", None)
    return total

