"""The language model: a ``transformers`` LLaMA, tiny for the demo or loaded from the user's local directory.

Building lives here; reading checkpoints (layouts, tensor names, shards) lives in ``model/llava_weights.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from rode_lightning.compat import use_sdpa_attention
from rode_lightning.model.dtypes import DTYPES, DtypeName, check_dtype
from rode_lightning.model.llava_weights import ProjectorWeights, inspect_llava_directory, load_llava_weights
from rode_lightning.user_errors import UserError


MAX_VOCABULARY_CHANGE = 64
"""How many embedding rows may be added or dropped to match the tokenizer. LLaVA v1.5 adds one (``<image>``);
llava-hf pads its vocabulary to a multiple of 64 (32064 rows for 32002 tokens). A larger difference means the
tokenizer is not the language model's (e.g. ``model.tokenizer: demo`` with a real LLaVA), which is refused."""


@dataclass
class LanguageConfig:
    """LLaMA shape for a model built from scratch (demo, tests). ``path`` loads real weights instead.

    Args:
        path: local directory of a LLaVA v1/v1.5 checkpoint (original repo layout), a transformers ``llava-hf``
            checkpoint or a plain LLaMA checkpoint (README: Loading real weights); the language model and the
            projector are loaded from it, and the shape keys below are ignored (``config.json`` decides).
            ``null`` builds a random model of the sizes below.
        dtype: ``fp32``, ``bf16`` or ``fp16``: the dtype of the frozen language model, loaded or random. A 7B LLaMA
            takes 27 GB in fp32 and 13.5 GB in bf16; the projector stays in fp32 (``model.vision.dtype``: the tower).
        hidden_size: model width.
        intermediate_size: MLP width.
        layers: decoder blocks.
        heads: attention heads.
        max_position_embeddings: longest sequence (image tokens included).
        initializer_range: std of the random weights; ``null`` for ``hidden_size ** -0.5``. LLaMA's 0.02 suits
            4096-wide models; at demo width it caps the logits near 2.5, so even a perfectly adapted model could not
            be confident (its loss could not fall below about 4.5 nats). Fan-in scaling gives logits the range a
            trained model has.
    """

    path: str | None = None
    dtype: DtypeName = "fp32"
    hidden_size: int = 128
    intermediate_size: int = 256
    layers: int = 2
    heads: int = 4
    max_position_embeddings: int = 512
    initializer_range: float | None = None

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads:
            raise UserError(f"model.language: hidden_size {self.hidden_size} is not divisible by heads {self.heads}")
        check_dtype("model.language.dtype", self.dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def load_language_model(config: LanguageConfig, vocab_size: int, vision_width: int | None = None
                        ) -> tuple[LlamaForCausalLM, ProjectorWeights | None]:
    """The LLaMA in ``config.dtype`` with ``vocab_size`` embedding rows, and the projector weights of its checkpoint.

    Without ``config.path`` the model is random (sizes from ``config``) and there are no projector weights. With a
    path, the directory's layout is detected (``model/llava_weights.py``), a ``LlamaForCausalLM`` is built from its text
    config on the meta device (no memory, no random init) and every tensor is loaded in place, one shard at a time.
    The embedding and ``lm_head`` are then resized to ``vocab_size`` (``len(tokenizer)``) by
    :func:`resize_vocabulary`. ``vision_width``, when given, is checked against the projector's input width
    (``mm_hidden_size``) before any weight is read.
    """
    if config.path is None:
        return _random_language_model(config, vocab_size), None
    directory = inspect_llava_directory(config.path)
    if vision_width is not None and directory.projector_input_dim not in (None, vision_width):
        raise UserError(f"model.vision width {vision_width} does not match the projector input width "
                        f"{directory.projector_input_dim} (mm_hidden_size) of {directory.describe()}; use the vision "
                        "tower the checkpoint was trained with (LLaVA-1.5: preset ViT-L-14-336, width 1024)")
    llama_config = LlamaConfig(**directory.text_config)
    use_sdpa_attention(llama_config)
    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config)
    projector = load_llava_weights(directory, model, config.torch_dtype)
    _rebuild_rotary_embedding(model)
    model.config.dtype = config.torch_dtype
    resize_vocabulary(model, vocab_size, source=directory.describe())
    return model, projector


def resize_vocabulary(model: LlamaForCausalLM, size: int, source: str = "the language model") -> None:
    """Make the input embedding and ``lm_head`` have ``size`` rows (``len(tokenizer)``).

    Added rows (tokens the checkpoint's vocabulary lacks, e.g. ``<image>`` for LLaVA v1.5) start at the mean of the
    existing rows, in both matrices, deterministically (no random numbers drawn). They stay frozen with the rest of
    the language model: ``<image>``'s input embedding is never used (:class:`~rode_lightning.model.lmm.FoodLMM`
    writes the projected patches over those positions), and its ``lm_head`` row gives an average logit, which the
    answers do not need. Dropped rows (llava-hf pads its vocabulary to a multiple of 64) belong to no token.
    """
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    rows = embedding.weight.shape[0]
    if rows == size:
        return
    if abs(rows - size) > MAX_VOCABULARY_CHANGE:
        raise UserError(f"the tokenizer has {size} tokens but the embedding of {source} has {rows} rows: "
                        "model.tokenizer must be the tokenizer of model.language.path (usually the same directory)")
    tied = head.weight is embedding.weight
    with torch.no_grad():
        embedding.weight = nn.Parameter(_resized(embedding.weight, size), requires_grad=embedding.weight.requires_grad)
        embedding.num_embeddings = size
        if embedding.padding_idx is not None and embedding.padding_idx >= size:
            embedding.padding_idx = None
        if tied:
            head.weight = embedding.weight
        else:
            head.weight = nn.Parameter(_resized(head.weight, size), requires_grad=head.weight.requires_grad)
        head.out_features = size
    model.config.vocab_size = size


def _resized(weight: torch.Tensor, size: int) -> torch.Tensor:
    if size < weight.shape[0]:
        return weight[:size].clone()
    mean = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
    return torch.cat([weight.detach(), mean.expand(size - weight.shape[0], -1)])


def language_model_config(config: LanguageConfig, vocab_size: int) -> LlamaConfig:
    """The shape of the random LLaMA built without ``config.path``: ``config``'s sizes, ``vocab_size`` rows."""
    llama_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=False,
        initializer_range=config.initializer_range or config.hidden_size ** -0.5,
    )
    use_sdpa_attention(llama_config)
    return llama_config


def _random_language_model(config: LanguageConfig, vocab_size: int) -> LlamaForCausalLM:
    model = LlamaForCausalLM(language_model_config(config, vocab_size))
    if config.dtype != "fp32":
        model.to(config.torch_dtype)
        model.config.dtype = config.torch_dtype
        _rebuild_rotary_embedding(model)  # ``to`` cast RoPE's frequencies too; they stay fp32, as transformers has them
    return model


def _rebuild_rotary_embedding(model: LlamaForCausalLM) -> None:
    """Rebuild the modules whose tensors are computed, not loaded (RoPE frequencies, fp32), on the device of the
    embedding: after loading into a meta-device model, or after casting the model to bf16/fp16."""
    device = model.get_input_embeddings().weight.device
    for name, module in list(model.named_modules()):
        if "RotaryEmbedding" in type(module).__name__:
            parent, _, child = name.rpartition(".")
            with torch.device(device):
                rebuilt = type(module)(module.config)
            setattr(model.get_submodule(parent), child, rebuilt)
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:
        raise ValueError(f"tensors neither loaded nor computed: {', '.join(left[:8])}")
