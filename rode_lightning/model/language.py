"""The language model: a ``transformers`` LLaMA, tiny for the demo or loaded from the user's local directory."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import LlamaConfig, LlamaForCausalLM


@dataclass
class LanguageConfig:
    """LLaMA shape for a model built from scratch (demo, tests). ``path`` loads real weights instead.

    Args:
        path: local directory with a transformers LLaMA checkpoint; ``null`` builds a random model of the sizes below.
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
    hidden_size: int = 128
    intermediate_size: int = 256
    layers: int = 2
    heads: int = 4
    max_position_embeddings: int = 512
    initializer_range: float | None = None

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads:
            raise ValueError(f"model.language: hidden_size {self.hidden_size} is not divisible by heads {self.heads}")


def build_language_model(config: LanguageConfig, vocab_size: int) -> LlamaForCausalLM:
    if config.path is not None:
        raise NotImplementedError("loading a local LLaMA/LLaVA checkpoint is not implemented yet")
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
    llama_config._attn_implementation = "sdpa"
    return LlamaForCausalLM(llama_config)
