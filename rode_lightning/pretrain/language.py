"""Stage 0b: a tiny LLaMA, trained as a causal language model on generic food text.

It learns the demo world's words and how numbers are written (digit by digit, as the tokenizer splits them), and
reads facts a real LLaMA knows about food (what dishes are made of, what 100 g of an ingredient are worth), never
the fine-tuning tasks' questions or answer formats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from rode_lightning.compat import use_sdpa_attention
from rode_lightning.pretrain.recipe import BaseRecipe
from rode_lightning.pretrain.schedule import train


def llama_config(recipe: BaseRecipe, vocab_size: int, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, hidden_size=recipe.hidden_size,
                       intermediate_size=recipe.intermediate_size, num_hidden_layers=recipe.layers,
                       num_attention_heads=recipe.heads, num_key_value_heads=recipe.heads,
                       max_position_embeddings=recipe.max_position_embeddings, tie_word_embeddings=False,
                       initializer_range=recipe.hidden_size ** -0.5, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def text_blocks(texts: list[str], tokenizer: PreTrainedTokenizerBase, length: int) -> torch.Tensor:
    """The texts as one stream (``<s> text </s>`` each), cut into ``(n, length)`` blocks, as LLaMA was trained."""
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream += [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
    usable = len(stream) // length * length
    return torch.tensor(stream[:usable]).view(-1, length)


def train_language_model(recipe: BaseRecipe, texts: list[str], tokenizer: PreTrainedTokenizerBase
                         ) -> tuple[LlamaForCausalLM, float]:
    torch.manual_seed(recipe.seed)
    config = llama_config(recipe, len(tokenizer), tokenizer)
    use_sdpa_attention(config)
    model = LlamaForCausalLM(config)
    blocks = text_blocks(texts, tokenizer, recipe.text_block_length)

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        ids = blocks[batch]
        logits = model(input_ids=ids, use_cache=False).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())

    final = train(list(model.parameters()), recipe.language, len(blocks), recipe.seed + 1, loss_of,
                  "pre-training the demo LLaMA")
    return model.eval(), final
