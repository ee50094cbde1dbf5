"""Tokenizers: the user's own (LLaVA/LLaMA directory) or a small one built offline for the demo.

The demo cannot download LLaMA's tokenizer, so it trains a byte-level BPE on the demo's own vocabulary (questions,
answers, ingredient and category names, digits). Byte-level BPE decodes exactly back to the text, which the answer
parsers rely on. Training is deterministic and takes well under a second.
"""

from __future__ import annotations

import functools
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from rode_lightning.data.prompts import IMAGE_PLACEHOLDER, NUTRITION_UNITS, QUESTIONS, SYSTEM_PROMPT

DEMO_TOKENIZER = "demo"
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


@functools.lru_cache(maxsize=4)
def load_tokenizer(spec: str = DEMO_TOKENIZER) -> PreTrainedTokenizerBase:
    """``"demo"`` builds the demo tokenizer; anything else is a local directory holding a Hugging Face tokenizer.

    The image placeholder is added as a special token when missing, as LLaVA does, and a pad token is set (LLaMA has
    none). Cached: the model and the data module ask for the same tokenizer.
    """
    if spec == DEMO_TOKENIZER:
        tokenizer = _build_demo_tokenizer()
    else:
        path = Path(spec)
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer: {spec!r} is neither 'demo' nor an existing directory")
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True, local_files_only=True)
    if IMAGE_PLACEHOLDER not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_PLACEHOLDER]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def _demo_corpus() -> list[str]:
    from rode_lightning.data.demo import CATEGORIES, INGREDIENTS, recipe_of

    lines = [SYSTEM_PROMPT, "USER: ASSISTANT:"]
    lines += [question for phrasings in QUESTIONS.values() for question in phrasings]
    lines += [", ".join(INGREDIENTS), ", ".join(CATEGORIES)]
    for category, spec in CATEGORIES.items():
        ingredients = [{"name": name} for name in spec.core + spec.optional]
        lines.append(" ".join(f"{n}. {step}" for n, step in enumerate(recipe_of(category, ingredients), start=1)))
    lines += [", ".join(f"{label}: 123.4 {unit}" for label, unit in NUTRITION_UNITS.values())]
    lines += [" ".join(str(number) for number in range(1000))]
    # Repeat so that whole words win the BPE merges over arbitrary fragments.
    return lines * 20


def _build_demo_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=[SPECIAL_TOKENS[k] for k in ("unk_token", "bos_token", "eos_token", "pad_token")]
        + [IMAGE_PLACEHOLDER],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_demo_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, additional_special_tokens=[IMAGE_PLACEHOLDER],
                                   **SPECIAL_TOKENS)
